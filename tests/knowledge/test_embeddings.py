"""Embeddings (README "The agent's knowledge"): where an agent names an `embedding_model`, passages are
embedded in batches when written and the question once per message, through a loopback stand-in of the
provider's `/v1/embeddings`; the two rankings are fused. A failing provider falls back to full-text search:
never an error for the integrator."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from knowledge.models import Passage
from tests.conftest import SEED_TEXT, Api
from tests.factories import AIAgentFactory, ChannelFactory, document_for

# The stand-in's "model": a word's dimension, synonyms sharing one, so that a question and a passage with no
# word in common (which full-text search cannot match) are close.
DIMENSIONS = {"warranty": 0, "guarantee": 0, "defects": 1, "faults": 1, "shipping": 2, "delivery": 2, "refund": 3}


def embedding(text: str) -> list[float]:
    vector = [0.0] * 7 + [0.1]  # other words count for nothing; the last dimension keeps the length above 0
    for word in text.lower().replace("?", " ").replace(".", " ").split():
        if word in DIMENSIONS:
            vector[DIMENSIONS[word]] += 1.0
    return vector


class Provider:
    """/v1/embeddings and /v1/chat/completions on loopback; records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []
        self.fail_embeddings = False
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                provider.requests.append((self.path, body))
                if self.path.endswith("/embeddings"):
                    if provider.fail_embeddings:
                        return self._send(500, {"error": {"message": "down"}})
                    data = [
                        {"object": "embedding", "index": i, "embedding": embedding(text)}
                        for i, text in enumerate(body["input"])
                    ]
                    return self._send(200, {"object": "list", "data": data, "model": body["model"], "usage": {}})
                choice = {"index": 0, "message": {"role": "assistant", "content": "Noted."}, "finish_reason": "stop"}
                usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
                completion = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [choice]}
                return self._send(200, {**completion, "usage": usage})

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def calls(self, suffix: str) -> list[dict]:
        return [body for path, body in self.requests if path.endswith(suffix)]


@pytest.fixture
def provider():
    provider = Provider()
    yield provider
    provider.server.shutdown()


@pytest.fixture
def llm_api(client, workspace, api_key, provider) -> Api:
    agent = AIAgentFactory.create(
        workspace=workspace, provider="openai", base_url=provider.url, model="m", embedding_model="tiny-embed"
    )
    document_for(agent, key="warranty", title="Cover", text="The warranty covers every part for two years.")
    document_for(agent, key="shipping", title="Parcels", text="Parcels leave within 2 days. Delivery in 5.")
    return Api(client, ChannelFactory.create(workspace=workspace, agent=agent), api_key)


def ask(api: Api, question: str) -> dict:
    response = api.post({**SEED_TEXT, "content": {"text": {"body": question}}})
    assert response.status_code == 200, response.content
    return response.json()


def test_passages_are_embedded_in_one_batch_and_the_question_once(llm_api, provider):
    ingested = provider.calls("/embeddings")
    assert [(call["model"], len(call["input"])) for call in ingested] == [("tiny-embed", 1), ("tiny-embed", 1)]
    assert all(passage.embedding is not None for passage in Passage.objects.filter(agent=llm_api.channel.agent))
    vector = Passage.objects.get(document__key="warranty").embedding
    assert abs(sum(value * value for value in vector) - 1.0) < 1e-6  # stored normalised

    body = ask(llm_api, "Is there a guarantee?")

    # no word of the question is in the document: the embeddings found it
    assert body["sources"][0]["documentId"] == "warranty"
    assert len(provider.calls("/embeddings")) == 3
    chat = provider.calls("/chat/completions")[-1]
    assert "The warranty covers every part for two years." in json.dumps(chat["messages"])


def test_a_failing_embeddings_endpoint_falls_back_to_full_text(llm_api, provider, caplog):
    provider.fail_embeddings = True
    body = ask(llm_api, "Do parcels leave quickly?")
    assert body["sources"][0]["documentId"] == "shipping"  # full-text search alone
    assert body["aiMessages"][0]["content"]["text"]["body"] == "Noted."


def test_a_document_written_while_embeddings_fail_is_indexed_for_full_text(llm_api, provider):
    provider.fail_embeddings = True
    document_for(llm_api.channel.agent, key="hours", title="Hours", text="We open at nine.")
    assert Passage.objects.get(document__key="hours").embedding is None
    provider.fail_embeddings = False
    assert ask(llm_api, "When do you open?")["sources"][0]["documentId"] == "hours"
