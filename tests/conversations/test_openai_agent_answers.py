"""What a provider sends back is checked before it reaches the database.

A reply's text must be storable in PostgreSQL's text and JSON columns (no U+0000, no lone surrogate), and
its token counts must fit the integer columns (0 to 2^31 - 1). Anything else is the provider's broken
answer: 502 `agent_unavailable` with `details.reason = "invalid_response"`, the message kept, nothing
charged; never a database error (500). A real HTTP server on loopback stands in for the provider.
"""

import json
import logging
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from billing.models import UsageLedgerEntry
from conversations.agents.errors import AgentUnavailable
from conversations.agents.openai_agent import OpenAICompatibleAgent, transcribe_audio
from conversations.models import Message
from tests.conftest import Api, error_of
from tests.conversations.test_openai_agent import KEY_VAR, completion, make_agent, text
from tests.factories import AIAgentFactory, ChannelFactory

CHAT_PATH = "/v1/chat/completions"


@pytest.fixture(autouse=True)
def provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, "sk-answers-test")


@pytest.fixture
def api(client, workspace, api_key, httpserver: HTTPServer) -> Api:
    agent = AIAgentFactory(
        workspace=workspace,
        provider="openai",
        base_url=httpserver.url_for("/v1"),
        model="test-model",
        api_key_env_var=KEY_VAR,
    )
    return Api(client, ChannelFactory(workspace=workspace, agent=agent), api_key)


def with_usage(prompt_tokens: Any, completion_tokens: Any = 7) -> dict[str, Any]:
    body = completion("Orders ship within 2 business days.")
    body["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": 1}
    return body


# The bodies as the provider's bytes: json.dumps writes U+0000 and a lone surrogate as the escapes
# "\u0000" and "\ud800", which is how they arrive over the wire.
BROKEN_ANSWERS = {
    "nul-in-text": json.dumps(completion("We ship\u0000 tomorrow.")),
    "lone-surrogate": json.dumps(completion("We ship \ud800 tomorrow.")),
    "lone-low-surrogate": json.dumps(completion("\udc00")),
    "text-not-a-string": json.dumps(completion({"text": "hi"})),  # type: ignore[arg-type]
    "negative-tokens": json.dumps(with_usage(-1)),
    "tokens-over-int32": json.dumps(with_usage(2**31)),
    "output-tokens-over-int32": json.dumps(with_usage(1, 2**31)),
    "tokens-1e300": json.dumps(with_usage(1e300)),
    "tokens-fractional": json.dumps(with_usage(1.5)),
    # (A numeric string or a boolean arrives as an int already: the SDK coerces them while parsing.)
}


@pytest.mark.parametrize("body", BROKEN_ANSWERS.values(), ids=BROKEN_ANSWERS.keys())
def test_a_broken_answer_is_502_keeps_the_message_and_charges_nothing(api, workspace, httpserver, body):
    # given
    httpserver.expect_request(CHAT_PATH).respond_with_response(Response(body, content_type="application/json"))

    # when
    response = api.post()

    # then
    assert response.status_code == 502, response.content
    error = error_of(response)
    assert (error["code"], error["details"]) == ("agent_unavailable", {"reason": "invalid_response"})
    inbound = Message.objects.get()  # the contact's message, and no reply
    assert (inbound.status, inbound.error_code, inbound.credits_reserved) == ("FAILED", "agent_unavailable", 0)
    assert not UsageLedgerEntry.objects.filter(kind=UsageLedgerEntry.Kind.CHARGE).exists()
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (100, 0)


GOOD_USAGE = {
    "the-largest-counts": (2**31 - 1, 2**31 - 1),
    "zero": (0, 0),
    "whole-floats": (42.0, 7.0),  # a sloppy server's numbers are still whole counts
    "missing": (None, None),
}


@pytest.mark.parametrize(("prompt_tokens", "completion_tokens"), GOOD_USAGE.values(), ids=GOOD_USAGE.keys())
def test_token_counts_that_fit_are_recorded(api, httpserver, prompt_tokens, completion_tokens):
    httpserver.expect_request(CHAT_PATH).respond_with_json(with_usage(prompt_tokens, completion_tokens))

    response = api.post()

    assert response.status_code == 200, response.content
    usage = response.json()["usage"]
    assert (usage["inputTokens"], usage["outputTokens"]) == (int(prompt_tokens or 0), int(completion_tokens or 0))
    reply = Message.objects.get(direction="OUTBOUND")
    assert (reply.input_tokens, reply.output_tokens) == (int(prompt_tokens or 0), int(completion_tokens or 0))


def test_a_paired_surrogate_is_an_ordinary_character(api, httpserver):
    httpserver.expect_request(CHAT_PATH).respond_with_response(
        Response('{"choices": [{"index": 0, "message": {"role": "assistant", "content": "Thanks \\ud83d\\ude00"}}]}')
    )

    response = api.post()

    assert response.status_code == 200, response.content
    assert response.json()["aiMessages"][0]["content"] == {"text": {"body": "Thanks \U0001f600"}, "type": "text"}


@pytest.mark.parametrize("transcript", ["Where\u0000 is it?", "\ud800"], ids=["nul", "lone-surrogate"])
def test_a_broken_transcription_is_refused(httpserver, transcript, caplog):
    caplog.set_level(logging.DEBUG)
    httpserver.expect_request("/v1/audio/transcriptions").respond_with_response(
        Response(json.dumps({"text": transcript}), content_type="application/json")
    )
    agent = make_agent(base_url=httpserver.url_for("/v1"))

    with pytest.raises(AgentUnavailable) as raised:
        transcribe_audio(agent=agent, data=b"OggS\x00voice", filename="voice.ogg", mime_type="audio/ogg")

    assert raised.value.details == {"reason": "invalid_response"}


def test_the_backend_refuses_a_nul_without_a_database(httpserver):
    # The check is the backend's own: the think phase has no database to fail on.
    httpserver.expect_request(CHAT_PATH).respond_with_response(
        Response(json.dumps(completion("a\u0000b")), content_type="application/json")
    )
    agent = make_agent(base_url=httpserver.url_for("/v1"))

    with pytest.raises(AgentUnavailable) as raised:
        OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    assert raised.value.details == {"reason": "invalid_response"}
