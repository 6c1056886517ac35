"""The OpenAI-compatible agent against a real HTTP server on loopback standing in for the LLM.

No database: the backend runs in the think phase and must not need one.
"""

import base64
import json
import logging
import socket
import threading
import time
import traceback
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from config.errors import ApplicationError
from conversations.agents import openai_agent
from conversations.agents.base import AgentConfig, HistoryItem, MediaPart
from conversations.agents.errors import AgentTimeout, AgentUnavailable
from conversations.agents.openai_agent import OpenAICompatibleAgent, transcribe_audio
from tests.agents import agent_config

KEY_VAR = "TEST_AGENT_LLM_API_KEY"
KEY = "sk-test-Zq8vN3do-not-leak-4f1c"
PROVIDER_SECRET = "provider-body-detail-7d2e"  # stands for whatever a provider echoes in an error body
CHAT_PATH = "/v1/chat/completions"


def make_agent(**overrides: Any) -> AgentConfig:
    return agent_config(
        **{
            "id": "agt_test",
            "name": "Helper",
            "instructions": "You are the shop's assistant.",
            "provider": "openai",
            "model": "test-model",
            "api_key_env_var": KEY_VAR,
            "timeout_seconds": 5.0,
            "split_threshold_chars": 0,
            "history_max_chars": 8000,
            **overrides,
        }
    )


def completion(content: str | None, *, usage: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "test-model-2024-01",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
    return body


def text(role: str, body: str) -> HistoryItem:
    return HistoryItem(role=role, type="TEXT", content={"text": {"body": body}})


def sent(httpserver: HTTPServer, index: int = -1) -> Request:
    request, _ = httpserver.log[index]
    return request


def assert_nothing_leaked(error: ApplicationError, caplog: pytest.LogCaptureFixture) -> None:
    shown = "".join(traceback.format_exception(error)) + repr(error.details) + caplog.text
    assert KEY not in shown
    assert PROVIDER_SECRET not in shown


def answered(httpserver: HTTPServer, count: int = 1) -> None:
    """Wait (bounded) until the server has finished the slow requests, so none spills into the next test."""
    deadline = time.monotonic() + 5
    while len(httpserver.log) < count and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, KEY)


@pytest.fixture
def agent(httpserver: HTTPServer) -> AgentConfig:
    return make_agent(base_url=httpserver.url_for("/v1"))


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's backoff (0.5 s, then 1 s) would only slow the tests that cannot send Retry-After."""
    monkeypatch.setattr(openai_agent, "MAX_RETRIES", 0)


# --- the request -------------------------------------------------------------------------------------


def test_reply_sends_key_model_system_prompt_and_history_in_order(httpserver, agent):
    # given
    httpserver.expect_request(CHAT_PATH, method="POST").respond_with_json(completion("We ship in 2 days."))
    history = [
        text("user", "Hi"),
        text("assistant", "Hello! How can I help?"),
        text("user", "Shipping time?"),
    ]

    # when
    reply = OpenAICompatibleAgent().reply(agent=agent, history=history)

    # then
    request = sent(httpserver)
    assert request.path == CHAT_PATH
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    body = request.get_json()
    assert body["model"] == "test-model"
    assert body["messages"] == [
        {"role": "system", "content": "You are the shop's assistant."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Shipping time?"},
    ]
    assert "temperature" not in body
    assert "max_tokens" not in body
    assert reply.texts == ["We ship in 2 days."]
    assert (reply.input_tokens, reply.output_tokens) == (42, 7)
    assert reply.raw_model == "test-model-2024-01"


def test_reply_sends_temperature_and_max_tokens_when_the_agent_sets_them(httpserver):
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("ok"))
    agent = make_agent(base_url=httpserver.url_for("/v1"), temperature=0.2, max_output_tokens=300)

    OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    body = sent(httpserver).get_json()
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 300


def test_the_body_is_already_what_the_sdks_own_create_would_send():
    """The agent posts its body without `chat.completions.create`'s walk over the SDK's parameter types
    (openai_agent._completion_body says why); that walk must have nothing to change in it, for text,
    metadata, images and the settings an agent may set."""
    from openai._utils import maybe_transform
    from openai.types.chat import completion_create_params

    png = b"\x89PNG\r\n\x1a\nfake"
    image = HistoryItem(
        role="user",
        type="IMAGE",
        content={"image": {"url": "https://cdn.example.com/a.png", "caption": "This?"}},
        media=MediaPart(url="https://cdn.example.com/a.png", mime_type="image/png", size=len(png), data=png),
        metadata={"orderId": "A-1"},
    )
    agent = make_agent(temperature=0.2, max_output_tokens=300)
    messages = openai_agent._messages(agent, [text("user", "hi"), text("assistant", "Hello."), image])
    body = openai_agent._completion_body(agent, messages)
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}

    assert maybe_transform(body, completion_create_params.CompletionCreateParamsNonStreaming) == body
    assert maybe_transform(streamed, completion_create_params.CompletionCreateParamsStreaming) == streamed


def test_reply_without_instructions_sends_no_system_message_and_the_default_model(httpserver, settings):
    settings.LLM_MODEL = "platform-model"
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("ok"))
    agent = make_agent(base_url=httpserver.url_for("/v1"), instructions="", model="")

    OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    body = sent(httpserver).get_json()
    assert body["model"] == "platform-model"
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_agent_without_endpoint_or_key_variable_uses_the_platform_settings(httpserver, settings):
    settings.LLM_BASE_URL = httpserver.url_for("/v1")
    settings.LLM_API_KEY = "sk-platform-key"
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("ok"))
    agent = make_agent(base_url="", api_key_env_var="")

    OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    assert sent(httpserver).headers["Authorization"] == "Bearer sk-platform-key"


def test_platform_key_is_not_sent_to_an_agents_own_endpoint(httpserver, settings):
    settings.LLM_BASE_URL = "http://platform-llm.invalid/v1"
    settings.LLM_API_KEY = "sk-platform-key"
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("ok"))
    agent = make_agent(base_url=httpserver.url_for("/v1"), api_key_env_var="")

    OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    assert sent(httpserver).headers["Authorization"] == "Bearer not-needed"


def test_unset_key_variable_sends_a_placeholder_for_keyless_local_servers(httpserver, monkeypatch):
    monkeypatch.delenv(KEY_VAR)
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("ok"))
    agent = make_agent(base_url=httpserver.url_for("/v1"))

    OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    assert sent(httpserver).headers["Authorization"] == "Bearer not-needed"


def test_image_with_bytes_is_sent_inline_as_a_data_url(httpserver, agent):
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("A red shoe."))
    png = b"\x89PNG\r\n\x1a\nfake-image-bytes"
    image = HistoryItem(
        role="user",
        type="IMAGE",
        content={"image": {"url": "https://cdn.example.com/shoe.png", "caption": "Is this in stock?"}},
        media=MediaPart(
            url="https://cdn.example.com/shoe.png",
            mime_type="image/png",
            size=len(png),
            caption="Is this in stock?",
            data=png,
        ),
    )

    OpenAICompatibleAgent().reply(agent=agent, history=[image])

    assert sent(httpserver).get_json()["messages"][-1] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Is this in stock?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}},
        ],
    }


@pytest.mark.parametrize(
    ("media", "description"),
    [
        (
            MediaPart(url="https://cdn.example.com/shoe.jpg?sig=s3cr3t", mime_type="image/jpeg", size=2048),
            "[Image (image/jpeg, 2 KB)]",
        ),
        (None, "[Image]"),
    ],
    ids=["media-without-bytes", "no-media"],
)
def test_image_without_bytes_is_described_never_sent_by_url(httpserver, agent, media, description):
    # given: an image the pipeline gave no bytes for (an earlier one over the history's budget)
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("ok"))
    image = HistoryItem(
        role="user",
        type="IMAGE",
        content={"image": {"url": "https://cdn.example.com/shoe.jpg?sig=s3cr3t"}},
        media=media,
    )

    # when
    OpenAICompatibleAgent().reply(agent=agent, history=[image])

    # then: the contact's URL (often signed) never reaches the provider
    assert sent(httpserver).get_json()["messages"][-1]["content"] == description
    assert b"shoe.jpg" not in sent(httpserver).get_data()


def test_other_media_are_described_as_text(httpserver, agent):
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("ok"))
    history = [
        HistoryItem(
            role="user",
            type="DOCUMENT",
            content={"document": {"url": "https://x.example/r.pdf", "filename": "report.pdf", "caption": "Q3 numbers"}},
            media=MediaPart(
                url="https://x.example/r.pdf",
                mime_type="application/pdf",
                size=12 * 1024,
                filename="report.pdf",
                caption="Q3 numbers",
                text="Revenue grew 12%.",
            ),
        ),
        HistoryItem(
            role="user",
            type="AUDIO",
            content={"audio": {"url": "https://x.example/v.ogg"}},
            media=MediaPart(url="https://x.example/v.ogg", mime_type="audio/ogg", text="Where is my order?"),
        ),
        HistoryItem(
            role="user",
            type="VIDEO",
            content={"video": {"url": "https://x.example/c.mp4", "caption": "Unboxing"}},
            media=MediaPart(url="https://x.example/c.mp4", mime_type="video/mp4", size=3 * 1024 * 1024),
        ),
        HistoryItem(role="user", type="AUDIO", content={"audio": {"url": "https://x.example/a.mp3"}}),
    ]

    OpenAICompatibleAgent().reply(agent=agent, history=history)

    contents = [message["content"] for message in sent(httpserver).get_json()["messages"][1:]]
    assert contents == [
        '[Document "report.pdf" (application/pdf, 12 KB): Q3 numbers]\nDocument text:\nRevenue grew 12%.',
        '[Audio "v.ogg" (audio/ogg)]\nTranscription:\nWhere is my order?',
        '[Video "c.mp4" (video/mp4, 3.0 MB): Unboxing]',
        '[Audio "a.mp3"]',
    ]


# --- the reply ---------------------------------------------------------------------------------------


def test_long_answer_is_split_into_several_texts(httpserver):
    paragraphs = ["First part of the answer.", "Second part, a bit longer.", "Third and last part."]
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("\n\n".join(paragraphs) + "\n"))
    agent = make_agent(base_url=httpserver.url_for("/v1"), split_threshold_chars=30)

    reply = OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "Tell me everything")])

    assert reply.texts == paragraphs


def test_answer_without_usage_counts_zero_tokens(httpserver, agent):
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("  Hi there.  ", usage=False))

    reply = OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    assert reply.texts == ["Hi there."]
    assert (reply.input_tokens, reply.output_tokens) == (0, 0)


@pytest.mark.parametrize("content", ["", "   \n", None])
def test_empty_answer_raises_agent_unavailable(httpserver, agent, content):
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion(content))

    with pytest.raises(AgentUnavailable) as raised:
        OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    assert raised.value.message == "The AI agent returned an empty answer."


def test_the_client_and_its_connection_pool_are_reused_across_calls(agent):
    first = openai_agent._client_for(agent)

    assert openai_agent._client_for(agent) is first
    assert openai_agent._client_for(make_agent(base_url=agent.base_url, timeout_seconds=9.0)) is not first


# --- failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
def test_provider_error_status_raises_agent_unavailable_without_leaking(httpserver, agent, status, caplog):
    # given: Retry-After-Ms keeps the SDK's retries (on 429 and 5xx) fast
    caplog.set_level(logging.DEBUG)
    httpserver.expect_request(CHAT_PATH).respond_with_json(
        {"error": {"message": f"failed: {PROVIDER_SECRET}", "type": "server_error"}},
        status=status,
        headers={"retry-after-ms": "1"},
    )

    # when
    with pytest.raises(AgentUnavailable) as raised:
        OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    # then
    assert raised.value.details == {"providerStatus": status}
    assert len(httpserver.log) == (1 + openai_agent.MAX_RETRIES if status in (429, 500, 503) else 1)
    assert_nothing_leaked(raised.value, caplog)
    warnings = [r.getMessage() for r in caplog.records if r.name == openai_agent.__name__]
    assert any("agt_test" in message and "Error" in message for message in warnings)


def test_a_transient_provider_error_is_retried(httpserver, agent):
    httpserver.expect_oneshot_request(CHAT_PATH).respond_with_json(
        {"error": {"message": "overloaded"}}, status=503, headers={"retry-after-ms": "1"}
    )
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("Back again."))

    reply = OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    assert reply.texts == ["Back again."]
    assert len(httpserver.log) == 2


@pytest.mark.parametrize(
    "response",
    [
        Response('{"choices": [{"message": ', content_type="application/json"),
        Response(json.dumps({"id": "x", "choices": []}), content_type="application/json"),
        Response(json.dumps({"choices": "nope", "model": 3}), content_type="application/json"),
        Response(f"<html>{PROVIDER_SECRET}</html>", content_type="text/html"),
    ],
    ids=["invalid-json", "no-choices", "wrong-types", "not-json"],
)
def test_malformed_answer_raises_agent_unavailable(httpserver, agent, response, caplog):
    caplog.set_level(logging.DEBUG)
    httpserver.expect_request(CHAT_PATH).respond_with_response(response)

    with pytest.raises(AgentUnavailable) as raised:
        OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    assert raised.value.details == {"reason": "invalid_response"}
    assert_nothing_leaked(raised.value, caplog)


def test_connection_refused_raises_agent_unavailable(no_retries, caplog):
    caplog.set_level(logging.DEBUG)
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent = make_agent(base_url=f"http://127.0.0.1:{port}/v1")

    with pytest.raises(AgentUnavailable) as raised:
        OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    assert raised.value.details == {"reason": "connection_refused"}
    assert_nothing_leaked(raised.value, caplog)


def test_slow_provider_raises_agent_timeout(httpserver, no_retries, caplog):
    # given: a provider that answers only after the agent's timeout
    caplog.set_level(logging.DEBUG)
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(timeout=5)  # bounded, and released below, so the server thread is never stuck
        return Response(json.dumps(completion("too late")), content_type="application/json")

    httpserver.expect_request(CHAT_PATH).respond_with_handler(slow)
    agent = make_agent(base_url=httpserver.url_for("/v1"), timeout_seconds=0.5)

    # when
    try:
        with pytest.raises(AgentTimeout) as raised:
            OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])
    finally:
        release.set()
        answered(httpserver)

    # then
    assert raised.value.details == {"timeoutSeconds": 0.5}
    assert_nothing_leaked(raised.value, caplog)


# --- transcription -----------------------------------------------------------------------------------


def test_transcribe_audio_posts_the_file_as_multipart(httpserver, agent):
    httpserver.expect_request("/v1/audio/transcriptions", method="POST").respond_with_json(
        {"text": " Where is my order? "}
    )
    audio = b"OggS\x00fake-voice-note"

    transcript = transcribe_audio(agent=agent, data=audio, filename="voice.ogg", mime_type="audio/ogg")

    assert transcript == "Where is my order?"
    request = sent(httpserver)
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.mimetype == "multipart/form-data"
    assert request.form["model"] == "whisper-1"
    upload = request.files["file"]
    assert upload.filename == "voice.ogg"
    assert upload.read() == audio


@pytest.mark.parametrize(
    ("agent_model", "setting", "expected"),
    [
        pytest.param("", None, "whisper-1", id="default"),
        pytest.param("", "whisper-large-v3", "whisper-large-v3", id="setting"),
        pytest.param("gpt-4o-transcribe", "whisper-large-v3", "gpt-4o-transcribe", id="agent"),
    ],
)
def test_the_transcription_model_is_the_agents_else_the_settings(httpserver, settings, agent_model, setting, expected):
    # given
    if setting is not None:
        settings.LLM_TRANSCRIPTION_MODEL = setting
    agent = make_agent(base_url=httpserver.url_for("/v1"), transcription_model=agent_model)
    httpserver.expect_request("/v1/audio/transcriptions", method="POST").respond_with_json({"text": "Hi"})

    # when
    transcribe_audio(agent=agent, data=b"OggS\x00voice", filename="voice.ogg", mime_type="audio/ogg")

    # then
    assert sent(httpserver).form["model"] == expected


def test_transcribe_audio_maps_provider_errors(httpserver, agent, caplog):
    httpserver.expect_request("/v1/audio/transcriptions").respond_with_json(
        {"error": {"message": PROVIDER_SECRET}}, status=400
    )

    with pytest.raises(AgentUnavailable) as raised:
        transcribe_audio(agent=agent, data=b"x", filename="voice.ogg", mime_type="audio/ogg")

    assert raised.value.details == {"providerStatus": 400}
    assert_nothing_leaked(raised.value, caplog)


# --- the deadline --------------------------------------------------------------------------------------


def test_a_timed_out_attempt_is_not_retried(httpserver):
    # given: retries at their default, and a provider slower than the agent's timeout
    release = threading.Event()
    arrived = []

    def slow(request: Request) -> Response:
        arrived.append(request.path)  # the server logs a request only once it is answered
        release.wait(timeout=5)
        return Response(json.dumps(completion("too late")), content_type="application/json")

    httpserver.expect_request(CHAT_PATH).respond_with_handler(slow)
    agent = make_agent(base_url=httpserver.url_for("/v1"), timeout_seconds=0.5)

    # when
    try:
        with pytest.raises(AgentTimeout):
            OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])
    finally:
        release.set()
        answered(httpserver)

    # then: the SDK would have tried three times, each with the whole timeout
    assert arrived == [CHAT_PATH]


def test_a_retry_after_longer_than_the_time_left_is_not_waited_for(httpserver):
    # given: a provider that asks for 30 s of patience from an agent that has 2 s
    httpserver.expect_request(CHAT_PATH).respond_with_json(
        {"error": {"message": "slow down"}}, status=429, headers={"retry-after": "30"}
    )
    agent = make_agent(base_url=httpserver.url_for("/v1"), timeout_seconds=2.0)

    # when
    with pytest.raises(AgentUnavailable) as raised:
        OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    # then: it says so at once instead of sleeping past the integrator's patience
    assert raised.value.details == {"providerStatus": 429}
    assert len(httpserver.log) == 1


def test_provider_may_forbid_a_retry(httpserver, agent):
    httpserver.expect_request(CHAT_PATH).respond_with_json(
        {"error": {"message": "no"}}, status=503, headers={"x-should-retry": "false"}
    )

    with pytest.raises(AgentUnavailable):
        OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    assert len(httpserver.log) == 1


# --- the key variable ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL", "openai_api_key", "API_KEY", "LLM_API_KEY\n"])
def test_a_key_variable_not_shaped_like_a_key_is_never_read(httpserver, monkeypatch, name):
    # given: an agent row that names another secret (written around the model's validation)
    monkeypatch.setenv(name.strip(), KEY)
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("ok"))
    agent = make_agent(base_url=httpserver.url_for("/v1"), api_key_env_var=name)

    # when
    with pytest.raises(AgentUnavailable) as raised:
        OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])

    # then
    assert raised.value.details == {"reason": "api_key_env_var_not_allowed"}
    assert httpserver.log == []


# --- the history's shape -------------------------------------------------------------------------------


def test_a_reply_split_into_parts_goes_back_as_one_assistant_message(httpserver, agent):
    httpserver.expect_request(CHAT_PATH).respond_with_json(completion("ok"))
    history = [
        text("user", "Tell me everything"),
        text("assistant", "First part."),
        text("assistant", "Second part."),
        text("user", "Thanks"),
    ]

    OpenAICompatibleAgent().reply(agent=agent, history=history)

    assert sent(httpserver).get_json()["messages"][1:] == [
        {"role": "user", "content": "Tell me everything"},
        {"role": "assistant", "content": "First part.\n\nSecond part."},
        {"role": "user", "content": "Thanks"},
    ]
