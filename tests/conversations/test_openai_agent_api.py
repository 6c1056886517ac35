"""The messages API with an OpenAI-compatible agent: a real HTTP server on loopback stands in for the LLM.

These go through the whole pipeline (accept, think, record) and assert both sides: the exact request the
platform sends to the provider, and what the integrator and the database see afterwards.
"""

import json
import socket
import threading
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from billing.models import UsageLedgerEntry
from channels_app.models import AIAgent
from conversations.agents import openai_agent
from conversations.agents.base import ContactContext
from conversations.agents.openai_agent import _contact_context
from conversations.models import Message
from tests.api.test_query_counts import EXISTING_CONTACT
from tests.conftest import SEED_TEXT, Api
from tests.conversations.test_openai_agent import answered
from tests.factories import AIAgentFactory, ChannelFactory

KEY_VAR = "TEST_CHANNELS_LLM_API_KEY"
KEY = "sk-api-test-9Rk2-do-not-leak-e61b"
PROVIDER_SECRET = "provider-echo-5c1a77"  # stands for whatever a provider puts in its bodies
CHAT_PATH = "/v1/chat/completions"
INSTRUCTIONS = "You are the shop's assistant. Answer in one short paragraph."


def completion(content: str | None, *, prompt_tokens: int = 42, completion_tokens: int = 7) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "test-model-2024-01",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def answer_with(httpserver: HTTPServer, *answers: str, **usage: int) -> None:
    """The stand-in answers each chat completion with the next of `answers`."""
    queue = list(answers)

    def handler(request: Request) -> Response:
        return Response(json.dumps(completion(queue.pop(0), **usage)), content_type="application/json")

    httpserver.expect_request(CHAT_PATH, method="POST").respond_with_handler(handler)


def say(body: str) -> dict[str, Any]:
    return {**SEED_TEXT, "content": {"text": {"body": body}}}


def chat_requests(httpserver: HTTPServer) -> list[Request]:
    return [request for request, _ in httpserver.log if request.path == CHAT_PATH]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


SYSTEM = {"role": "system", "content": INSTRUCTIONS}
# The contact's name and attributes, with every message (README "Contact attributes and labels").
CONTACT = {"role": "system", "content": _contact_context(ContactContext(name="User Name", attributes={}))}


@pytest.fixture(autouse=True)
def provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, KEY)


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Retry-After the backoff (0.5 s, then 1 s) would only slow these tests down."""
    monkeypatch.setattr(openai_agent, "MAX_RETRIES", 0)


@pytest.fixture
def agent(workspace, httpserver: HTTPServer) -> AIAgent:
    return AIAgentFactory.create(
        workspace=workspace,
        provider="openai",
        base_url=httpserver.url_for("/v1"),
        model="test-model",
        api_key_env_var=KEY_VAR,
        instructions=INSTRUCTIONS,
    )


@pytest.fixture
def api(client, workspace, agent, api_key) -> Api:
    return Api(client, ChannelFactory(workspace=workspace, agent=agent), api_key)


# --- the request the provider gets ----------------------------------------------------------------------


def test_provider_gets_key_model_system_prompt_and_the_conversation_newest_last(api, httpserver):
    # given
    answer_with(httpserver, "Hello! How can I help?", "We ship within 2 business days.", "Yes, within 30 days.")

    # when: three messages of one contact
    bodies = [api.post(say(text)) for text in ("Hi", "How long does shipping take?", "Can I get a refund?")]

    # then
    assert [response.status_code for response in bodies] == [200, 200, 200]
    requests = chat_requests(httpserver)
    assert len(requests) == 3
    last = requests[-1]
    assert last.method == "POST"
    assert last.host == f"{httpserver.host}:{httpserver.port}"
    assert last.headers["Authorization"] == f"Bearer {KEY}"
    assert last.mimetype == "application/json"
    sent = last.get_json()
    assert sent["model"] == "test-model"
    assert "temperature" not in sent and "max_tokens" not in sent  # each server keeps its own defaults
    assert sent["messages"] == [
        SYSTEM,
        CONTACT,
        user("Hi"),
        assistant("Hello! How can I help?"),
        user("How long does shipping take?"),
        assistant("We ship within 2 business days."),
        user("Can I get a refund?"),
    ]
    assert requests[0].get_json()["messages"] == [SYSTEM, CONTACT, user("Hi")]
    assert bodies[-1].json()["aiMessages"][0]["content"] == {"text": {"body": "Yes, within 30 days."}, "type": "text"}


def test_the_messages_metadata_reaches_the_model_as_a_system_message_after_the_instructions(api, httpserver):
    # given
    answer_with(httpserver, "Hello, gold member!", "Sure.")
    metadata = {"plan": "gold", "page": "https://shop.example/checkout", "locale": "pt-BR"}

    # when: a message with metadata, then one without
    first = api.post({**say("Hi"), "metadata": metadata})
    second = api.post(say("Thanks"))

    # then: the model sees the current message's metadata, as context, right after the instructions
    assert first.status_code == second.status_code == 200
    sent = [request.get_json()["messages"] for request in chat_requests(httpserver)]
    context = sent[0][1]
    assert sent[0][0] == SYSTEM and sent[0][2:] == [CONTACT, user("Hi")]
    assert context["role"] == "system"
    assert "not written by the contact" in context["content"]
    assert json.loads(context["content"].split("as JSON: ", 1)[1]) == metadata
    # an earlier message's metadata described that moment, not this one
    assert sent[1] == [SYSTEM, CONTACT, user("Hi"), assistant("Hello, gold member!"), user("Thanks")]
    assert Message.objects.get(pk=first.json()["messageId"]).metadata == metadata


def test_agent_temperature_and_max_output_tokens_are_sent(api, agent, httpserver):
    AIAgent.objects.filter(pk=agent.pk).update(temperature=0.2, max_output_tokens=300)
    answer_with(httpserver, "ok")

    assert api.post().status_code == 200

    sent = chat_requests(httpserver)[0].get_json()
    assert (sent["temperature"], sent["max_tokens"]) == (0.2, 300)


def test_usage_tokens_are_in_the_response_the_reply_and_the_ledger(api, workspace, httpserver):
    answer_with(httpserver, "We ship within 2 business days.", prompt_tokens=42, completion_tokens=7)

    body = api.post().json()

    assert body["usage"] == {"credits": 1, "balance": 99, "inputTokens": 42, "outputTokens": 7}
    reply = Message.objects.get(pk=body["aiMessages"][0]["id"])
    assert (reply.input_tokens, reply.output_tokens, reply.credits) == (42, 7, 1)
    charge = UsageLedgerEntry.objects.get(workspace=workspace, kind=UsageLedgerEntry.Kind.CHARGE)
    assert (charge.delta, charge.balance_after, charge.input_tokens, charge.output_tokens) == (-1, 99, 42, 7)
    assert charge.message_id == body["messageId"]


@pytest.mark.parametrize(
    ("prompt_tokens", "completion_tokens", "credits"),
    [
        (1500, 500, 22),  # 2 per reply + 10 per 1,000 tokens: 2 + 20
        (1, 0, 3),  # a started thousand is charged whole: 2 + ceil(0.01)
        # More than the reservation (2 + 10 x (12,000 chars / 4 + 1,024 output tokens) / 1,000 = 43): the
        # charge stops at what was reserved, so the balance can never go below zero.
        (400_000, 100_000, 43),
    ],
)
def test_token_priced_agent_is_charged_per_reply_plus_per_1k_tokens(
    api, agent, workspace, httpserver, prompt_tokens, completion_tokens, credits
):
    # given
    AIAgent.objects.filter(pk=agent.pk).update(credit_cost_per_reply=2, credit_cost_per_1k_tokens=10)
    answer_with(httpserver, "ok", prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    # when
    body = api.post().json()

    # then
    assert body["usage"] == {
        "credits": credits,
        "balance": 100 - credits,
        "inputTokens": prompt_tokens,
        "outputTokens": completion_tokens,
    }
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (100 - credits, 0)
    charge = UsageLedgerEntry.objects.get(workspace=workspace, kind=UsageLedgerEntry.Kind.CHARGE)
    assert (charge.delta, charge.input_tokens, charge.output_tokens) == (-credits, prompt_tokens, completion_tokens)


def test_long_answer_becomes_several_ai_messages_and_goes_back_as_one(api, agent, httpserver):
    # given: an agent that splits above 30 characters
    AIAgent.objects.filter(pk=agent.pk).update(split_threshold_chars=30)
    paragraphs = ["First part of the answer.", "Second part, a bit longer.", "Third and last part."]
    answer_with(httpserver, "\n\n".join(paragraphs) + "\n", "Glad to help.")

    # when
    first = api.post(say("Tell me everything")).json()
    api.post(say("Thanks"))

    # then: three aiMessages, in order, stored as parts 1..3 of the message's position
    assert [m["content"]["text"]["body"] for m in first["aiMessages"]] == paragraphs
    parts = Message.objects.filter(reply_to_id=first["messageId"]).order_by("part")
    assert [(m.part, m.content["text"]["body"]) for m in parts] == list(enumerate(paragraphs, start=1))
    assert [m.credits for m in parts] == [1, 0, 0]  # one reply, charged once
    assert first["usage"]["credits"] == 1
    # and the model sees its answer again as the one message it wrote: user and assistant alternate
    assert chat_requests(httpserver)[1].get_json()["messages"] == [
        SYSTEM,
        CONTACT,
        user("Tell me everything"),
        assistant("\n\n".join(paragraphs)),
        user("Thanks"),
    ]


def test_hot_path_query_count_with_an_openai_agent_is_pinned(api, httpserver, assert_statements):
    answer_with(httpserver, "first", "second")
    api.post()  # the contact and the conversation exist
    # as tests/api/test_query_counts.py counts them
    with assert_statements(EXISTING_CONTACT):
        assert api.post(say("second")).status_code == 200


# --- failures -------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:  # free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _provider_error(status: int):
    def arrange(httpserver: HTTPServer, agent: AIAgent) -> None:
        httpserver.expect_request(CHAT_PATH).respond_with_json(
            {"error": {"message": f"upstream failed: {PROVIDER_SECRET}", "type": "server_error"}}, status=status
        )

    return arrange


def _malformed(httpserver: HTTPServer, agent: AIAgent) -> None:
    httpserver.expect_request(CHAT_PATH).respond_with_response(
        Response('{"choices": [{"message": {"content": "' + PROVIDER_SECRET, content_type="application/json")
    )


def _empty(httpserver: HTTPServer, agent: AIAgent) -> None:
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("  \n"))


def _refused(httpserver: HTTPServer, agent: AIAgent) -> None:
    AIAgent.objects.filter(pk=agent.pk).update(base_url=f"http://127.0.0.1:{_free_port()}/v1")


FAILURES = {
    "status-500": (_provider_error(500), 502, "agent_unavailable", {"providerStatus": 500}),
    "status-429": (_provider_error(429), 502, "agent_unavailable", {"providerStatus": 429}),
    "malformed-json": (_malformed, 502, "agent_unavailable", {"reason": "invalid_response"}),
    "empty-content": (_empty, 502, "agent_unavailable", {"reason": "empty_answer"}),
    "connection-refused": (_refused, 502, "agent_unavailable", {"reason": "connection_refused"}),
}


def assert_failure_kept_the_message_and_charged_nothing(response, workspace, *, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code
    assert KEY not in response.content.decode() and PROVIDER_SECRET not in response.content.decode()
    inbound = Message.objects.get()  # the contact's message, and nothing else
    assert (inbound.direction, inbound.status, inbound.error_code, inbound.credits_reserved) == (
        "INBOUND",
        "FAILED",
        code,
        0,
    )
    assert not UsageLedgerEntry.objects.filter(kind=UsageLedgerEntry.Kind.CHARGE).exists()
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (100, 0)


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_provider_failure_is_502_keeps_the_message_and_charges_nothing(
    api, agent, workspace, httpserver, no_retries, failure
):
    # given
    arrange, status, code, details = failure
    arrange(httpserver, agent)

    # when
    response = api.post()

    # then
    assert_failure_kept_the_message_and_charged_nothing(response, workspace, status=status, code=code)
    assert response.json()["error"]["details"] == details


def test_provider_timeout_is_504_keeps_the_message_and_charges_nothing(api, agent, workspace, httpserver):
    # given: a provider that answers only after the agent's timeout (retries left at their default)
    AIAgent.objects.filter(pk=agent.pk).update(timeout_seconds=0.5)
    release = threading.Event()
    arrived = []

    def slow(request: Request) -> Response:
        arrived.append(request.path)  # the server logs a request only once it is answered
        release.wait(timeout=5)  # bounded, and released below, so the server thread is never stuck
        return Response(json.dumps(completion("too late")), content_type="application/json")

    httpserver.expect_request(CHAT_PATH).respond_with_handler(slow)

    # when
    try:
        response = api.post()
    finally:
        release.set()
        answered(httpserver)

    # then
    assert_failure_kept_the_message_and_charged_nothing(response, workspace, status=504, code="agent_timeout")
    assert response.json()["error"]["details"] == {"timeoutSeconds": 0.5}
    assert arrived == [CHAT_PATH]  # the timeout is the whole call's: a timed-out attempt is not retried


def test_retry_after_a_failure_answers_the_stored_message_once(api, workspace, httpserver, no_retries):
    # given: a first attempt that fails at the provider
    httpserver.expect_oneshot_request(CHAT_PATH).respond_with_json({"error": {"message": "down"}}, status=503)
    answer_with(httpserver, "Back again.")
    failed = api.post(say("Hello?"), idempotency_key="retry-1")
    assert failed.status_code == 502

    # when: the integrator retries with the same key
    retried = api.post(say("Hello?"), idempotency_key="retry-1")

    # then: the stored message is answered, not stored twice, and charged once
    assert retried.status_code == 200, retried.content
    assert retried.json()["messageId"] == Message.objects.get(direction="INBOUND").pk
    assert chat_requests(httpserver)[-1].get_json()["messages"] == [SYSTEM, CONTACT, user("Hello?")]
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (99, 0)


def test_a_failed_message_is_left_out_of_later_history(api, httpserver, no_retries):
    answer_with(httpserver, "Hello!")
    api.post(say("Hi"))
    httpserver.clear_all_handlers()
    httpserver.expect_oneshot_request(CHAT_PATH).respond_with_json({"error": {"message": "down"}}, status=500)
    answer_with(httpserver, "Sure.")

    assert api.post(say("Lost question")).status_code == 502
    assert api.post(say("Next question")).status_code == 200

    assert chat_requests(httpserver)[-1].get_json()["messages"] == [
        SYSTEM,
        CONTACT,
        user("Hi"),
        assistant("Hello!"),
        user("Next question"),
    ]


def test_key_variable_not_shaped_like_a_key_is_never_read(api, agent, httpserver, settings, workspace):
    # given: a row written around the model's validation, naming the platform's secret
    AIAgent.objects.filter(pk=agent.pk).update(api_key_env_var="SECRET_KEY")
    answer_with(httpserver, "should not be asked")

    # when
    response = api.post()

    # then: the provider is not called at all
    assert chat_requests(httpserver) == []
    assert_failure_kept_the_message_and_charged_nothing(response, workspace, status=502, code="agent_unavailable")
    assert response.json()["error"]["details"] == {"reason": "api_key_env_var_not_allowed"}
    assert settings.SECRET_KEY not in response.content.decode()
