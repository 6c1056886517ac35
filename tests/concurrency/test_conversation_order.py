"""Messages posted at the same moment, against real PostgreSQL and a threaded LLM stand-in on loopback.

Two messages of one conversation are answered in order: the second's history holds the first message and
its reply. Messages of different conversations never wait on each other. The stand-in records when each
chat request arrived and when it was answered; the assertions compare those instants with each other,
never with a wall-clock budget.
"""

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import Client
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from billing.credits import credits_grant
from conversations.models import Message
from tests.concurrency.conftest import run_together
from tests.conftest import SEED_TEXT, Api, requires_postgresql
from tests.factories import AIAgentFactory, ChannelFactory, WorkspaceFactory, api_key_for

pytestmark = [requires_postgresql, pytest.mark.django_db(transaction=True)]

KEY_VAR = "TEST_CONCURRENCY_LLM_API_KEY"
CHAT_PATH = "/v1/chat/completions"
AGENT_LATENCY = 0.3  # seconds the stand-in takes to answer: long enough for the requests to meet
GATE_TIMEOUT = 5.0  # how long a request waits for the others to arrive before answering anyway


@dataclass
class Call:
    question: str  # the last user message
    messages: list[dict[str, Any]]
    arrived: float
    answered: float = 0.0


@dataclass
class RecordingLlm:
    """Answers "Answer to <question>" after AGENT_LATENCY. With `gate` > 1 each request first waits (up to
    GATE_TIMEOUT) until `gate` requests have arrived: requests that reach it together answer together, and a
    request held back by another never meets it."""

    server: HTTPServer
    gate: int = 1
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    all_arrived: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.server.expect_request(CHAT_PATH, method="POST").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        messages = request.get_json()["messages"]
        call = Call(question=messages[-1]["content"], messages=messages, arrived=time.monotonic())
        with self.lock:
            self.calls.append(call)
            if len(self.calls) >= self.gate:
                self.all_arrived.set()
        self.all_arrived.wait(timeout=GATE_TIMEOUT)
        time.sleep(AGENT_LATENCY)
        call.answered = time.monotonic()
        answer = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "stand-in",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": f"Answer to {call.question}"},
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        return Response(json.dumps(answer), content_type="application/json")

    def by_arrival(self) -> list[Call]:
        with self.lock:
            return sorted(self.calls, key=lambda call: call.arrived)


@pytest.fixture
def llm_server(monkeypatch: pytest.MonkeyPatch):
    """A stand-in that serves each request in its own thread (pytest-httpserver's default serves one at a
    time, which would serialize the very requests these tests want to overlap)."""
    monkeypatch.setenv(KEY_VAR, "sk-concurrency-test")
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def setup(llm_server):
    workspace = WorkspaceFactory()
    credits_grant(workspace=workspace, amount=100)
    agent = AIAgentFactory(
        workspace=workspace,
        provider="openai",
        base_url=llm_server.url_for("/v1"),
        model="stand-in",
        api_key_env_var=KEY_VAR,
        instructions="",
        timeout_seconds=10,
    )
    channel = ChannelFactory(workspace=workspace, agent=agent)
    return channel, api_key_for(workspace)[1]


def say(body: str, contact: str = "user@example.com") -> dict[str, Any]:
    return {**SEED_TEXT, "contactIdentifier": contact, "content": {"text": {"body": body}}}


def post_together(channel, key: str, bodies: list[dict[str, Any]]) -> list[Any]:
    """Post `bodies` from one thread each, released together by a barrier (each thread closes its own
    database connection at the end)."""
    return run_together(len(bodies), lambda index, api: api.post(bodies[index]), channel=channel, key=key)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


@pytest.mark.parametrize("existing_conversation", [True, False], ids=["open-conversation", "new-contact"])
def test_two_messages_of_one_conversation_are_answered_in_order(setup, llm_server, existing_conversation):
    # given
    channel, key = setup
    llm = RecordingLlm(llm_server)
    earlier = []
    if existing_conversation:
        assert Api(Client(), channel, key).post(say("Hello")).status_code == 200
        earlier = [user("Hello"), assistant("Answer to Hello")]

    # when: two messages of the same contact at the same moment
    responses = post_together(channel, key, [say("Question A"), say("Question B")])

    # then: both answered, in one conversation
    assert [response.status_code for response in responses] == [200, 200], [r.content for r in responses]
    assert len({response.json()["conversationId"] for response in responses}) == 1
    first, second = llm.by_arrival()[-2:]
    assert {first.question, second.question} == {"Question A", "Question B"}
    # the second was asked only once the first was answered, and saw the first and its reply
    assert second.arrived >= first.answered
    assert first.messages == [*earlier, user(first.question)]
    assert second.messages == [
        *earlier,
        user(first.question),
        assistant(f"Answer to {first.question}"),
        user(second.question),
    ]
    # and the transcript reads in the same order
    transcript = [m.content["text"]["body"] for m in Message.objects.order_by("seq", "part")]
    assert transcript == [m["content"] for m in second.messages] + [f"Answer to {second.question}"]


def test_messages_of_two_conversations_do_not_wait_on_each_other(setup, llm_server):
    # given: a stand-in that answers only once both requests are with it (or after GATE_TIMEOUT)
    channel, key = setup
    llm = RecordingLlm(llm_server, gate=2)

    # when: two contacts write at the same moment
    responses = post_together(channel, key, [say("From Ann", "ann@example.com"), say("From Bob", "bob@example.com")])

    # then: both were with the agent at the same time: each arrived before the other was answered
    assert [response.status_code for response in responses] == [200, 200], [r.content for r in responses]
    calls = llm.by_arrival()
    assert len(calls) == 2
    assert max(call.arrived for call in calls) < min(call.answered for call in calls)
    assert {call.question for call in calls} == {"From Ann", "From Bob"}
    assert all(len(call.messages) == 1 for call in calls)  # neither sees the other's conversation
