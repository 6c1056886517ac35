"""Logs: JSON lines with the request id (also returned as X-Request-ID), the workspace, channel, status and
latencies, and never an API key, a provider key or a message body."""

import io
import json
import logging
import os
import re
import uuid

import pytest
import structlog
from django.db import DatabaseError, connection, transaction
from pytest_httpserver import HTTPServer

from channels_app.models import AIAgent
from config.logs import REDACTED, formatter
from tests.config.test_database_outage import LLM_ANSWER
from tests.conftest import SEED_TEXT, Api
from tests.factories import ChannelFactory, api_key_for

BODY = "My order 4411 never arrived, my phone is +1 555 0100"
PROVIDER_KEY_VAR = "TEST_LOGS_PROVIDER_API_KEY"
PROVIDER_KEY = "sk-test-Lg7Qw2never-in-logs-93xk"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture
def log_lines():
    """Everything logged at INFO and above, rendered exactly as production renders it (one JSON per line)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    lines.text = stream.getvalue  # type: ignore[attr-defined]
    yield lines
    root.removeHandler(handler)
    root.setLevel(level)


def finished(lines: list[dict]) -> dict:
    (line,) = [line for line in lines if line["event"] == "request_finished"]
    return line


# --- the request id ------------------------------------------------------------------------------------


def test_a_sane_incoming_request_id_is_kept_and_returned(api):
    response = api.post(SEED_TEXT, HTTP_X_REQUEST_ID="lb-7f3a.9:c_2")
    assert response["X-Request-ID"] == "lb-7f3a.9:c_2"


@pytest.mark.parametrize("incoming", [None, "", "has space", "x" * 129, '"><script>', "-leading-dash", "é"])
def test_a_missing_or_odd_request_id_is_replaced_by_a_new_uuid(api, incoming):
    headers = {} if incoming is None else {"HTTP_X_REQUEST_ID": incoming}
    response = api.post(SEED_TEXT, **headers)
    assert UUID.match(response["X-Request-ID"])


def test_every_response_carries_a_request_id(client, db):
    for response in (client.get("/healthz"), client.get("/nothing-here"), client.get("/api/schema/")):
        assert UUID.match(response["X-Request-ID"])


def test_request_ids_differ_between_requests(api):
    assert api.post(SEED_TEXT)["X-Request-ID"] != api.post(SEED_TEXT)["X-Request-ID"]


# --- what a request's lines say ------------------------------------------------------------------------


def test_request_lines_are_json_with_id_workspace_channel_status_and_latencies(api, channel, workspace, log_lines):
    # when
    response = api.post(SEED_TEXT, HTTP_X_REQUEST_ID="req-42")

    # then
    assert response.status_code == 200
    lines = log_lines()
    assert lines and all(line["request_id"] == "req-42" for line in lines)
    done = finished(lines)
    assert done["code"] == 200
    assert (done["workspace_id"], done["channel_id"]) == (workspace.pk, channel.pk)
    assert done["api_key_prefix"] == api.key.split(".")[0]
    assert done["latency_seconds"] >= done["agent_seconds"] >= 0
    assert done["level"] == "info" and done["timestamp"]
    (agent,) = [line for line in lines if line["event"] == "agent replied"]
    assert agent["agent_id"] == channel.agent_id and agent["parts"] == 1


def test_an_error_line_names_its_code(api, log_lines):
    api.post(SEED_TEXT, channel_id="ch_doesnotexist")

    done = finished(log_lines())
    assert (done["code"], done["error_code"]) == (404, "channel_not_found")


def test_an_unexpected_error_is_logged_with_the_request_id(api, channel, scripted_agent, log_lines):
    def broken(*, agent, history):
        raise RuntimeError(f"boom while answering {history[-1].content}")  # quotes the contact's words

    scripted_agent.take_over(channel.agent).script(broken)

    response = api.post(SEED_TEXT, HTTP_X_REQUEST_ID="req-500")

    assert response.status_code == 500
    errors = [line for line in log_lines() if line["level"] == "error"]
    assert errors and all(line["request_id"] == "req-500" for line in errors)
    # the class and where it was raised, not what it says (exception texts quote data: see below)
    assert any("RuntimeError" in line.get("exception", "") and ", in broken" in line["exception"] for line in errors)
    assert SEED_TEXT["content"]["text"]["body"] not in log_lines.text()


# --- secrets -------------------------------------------------------------------------------------------


def test_no_api_key_and_no_message_body_at_info(api, log_lines):
    api.post({**SEED_TEXT, "content": {"text": {"body": BODY}}})
    api.post({**SEED_TEXT, "content": {"text": {"body": BODY}}}, key=api.key.split(".")[0] + ".wrong-secret")
    api.post({**SEED_TEXT, "content": {"text": {"body": ""}}})  # a validation error quotes no body either

    text = log_lines.text()
    assert text
    assert api.key not in text and api.key.split(".")[1] not in text
    assert BODY not in text and "4411" not in text and "User Name" not in text


@pytest.fixture
def own_httpserver():
    """An LLM stand-in on a port of its own: the shared `httpserver` outlives each test, and a call still
    under way from an earlier test of this process (an agent without a key: "Bearer not-needed") can land
    in its log while this one runs."""
    with HTTPServer(host="127.0.0.1") as server:
        yield server


def test_no_provider_key_in_logs_when_the_llm_answers_or_fails(client, db, monkeypatch, log_lines, own_httpserver):
    # given: a channel whose agent is an OpenAI-compatible LLM on loopback, keyed from the environment
    httpserver = own_httpserver
    monkeypatch.setenv(PROVIDER_KEY_VAR, PROVIDER_KEY)
    channel = ChannelFactory.create()
    AIAgent.objects.filter(pk=channel.agent_id).update(
        provider="openai",
        base_url=httpserver.url_for("/v1"),
        model="test-model",
        api_key_env_var=PROVIDER_KEY_VAR,
        timeout_seconds=5,
    )
    from billing.credits import credits_grant

    credits_grant(workspace=channel.workspace, amount=10, note="test")
    api = Api(client, channel, api_key_for(channel.workspace)[1])
    httpserver.expect_ordered_request("/v1/chat/completions", method="POST").respond_with_json(LLM_ANSWER)
    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_json(
        {"error": {"message": f"bad key {PROVIDER_KEY}"}}, status=401
    )

    # when
    ok = api.post({**SEED_TEXT, "content": {"text": {"body": BODY}}})
    failed = api.post({**SEED_TEXT, "content": {"text": {"body": BODY}}})

    # then
    assert ok.status_code == 200, ok.content
    assert failed.status_code in (502, 504), failed.content
    assert [request.headers["Authorization"] for request, _ in httpserver.log] == [f"Bearer {PROVIDER_KEY}"] * 2
    text = log_lines.text()
    assert "agent replied" in text
    assert PROVIDER_KEY not in text and BODY not in text and api.key not in text


def test_an_llm_call_adds_the_agents_line_and_none_of_the_http_clients(client, db, log_lines, httpserver: HTTPServer):
    # given: a channel whose agent is an OpenAI-compatible LLM on loopback
    channel = ChannelFactory.create()
    AIAgent.objects.filter(pk=channel.agent_id).update(
        provider="openai", base_url=httpserver.url_for("/v1"), model="test-model", timeout_seconds=5
    )
    from billing.credits import credits_grant

    credits_grant(workspace=channel.workspace, amount=10, note="test")
    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_json(LLM_ANSWER)

    # when
    response = Api(client, channel, api_key_for(channel.workspace)[1]).post(SEED_TEXT)

    # then: one line of ours for the call; the HTTP client's "HTTP Request: POST ..." would repeat it
    assert response.status_code == 200, response.content
    lines = log_lines()
    assert [line["event"] for line in lines if line["event"] == "agent replied"] == ["agent replied"]
    assert not [line for line in lines if line.get("logger", "").startswith(("httpx", "httpcore", "openai"))]


def test_redact_drops_secret_fields_and_masks_key_shaped_values(log_lines):
    logger = structlog.get_logger("tests.redact")
    key = "AbCd1234." + "z" * 32

    logger.info(
        "calling with %s",
        key,
        api_key=key,
        text="hello there",
        note=f"Bearer {uuid.uuid4().hex}",
        provider="sk-abcdefghijklmnopqrstu",
    )
    logging.getLogger("tests.stdlib").info("stdlib says %s", key, extra={"body": "a message"})

    first, second = log_lines()
    assert first["event"] == f"calling with {REDACTED}"
    assert (first["api_key"], first["text"], first["note"], first["provider"]) == (REDACTED,) * 4
    assert second["event"] == f"stdlib says {REDACTED}" and second["body"] == REDACTED
    assert key not in log_lines.text()


# --- exceptions: their class, SQLSTATE and frames, never their text ------------------------------------

SECRET_BODY = "Order 9931 was for my sister, her address is 12 Hidden Lane"


def test_a_database_error_quoting_a_message_body_never_reaches_the_log(api, monkeypatch, log_lines):
    """PostgreSQL's error for a row it refuses quotes the row ("Failing row contains (...)"), the message's
    content column included; psycopg puts that in the exception's text, which a traceback prints."""
    from conversations.agents.builtin import BuiltinAgent
    from conversations.models import Message

    def storing_a_bad_row(self, **kwargs):  # a bug: a reply row without its conversation
        content = {"text": {"body": SECRET_BODY}}
        with transaction.atomic():
            Message.objects.create(conversation=None, seq=1, direction="OUTBOUND", type="TEXT", content=content)

    monkeypatch.setattr(BuiltinAgent, "reply", storing_a_bad_row)

    response = api.post({**SEED_TEXT, "content": {"text": {"body": SECRET_BODY}}}, HTTP_X_REQUEST_ID="req-db")

    assert response.status_code == 500
    (error,) = [line for line in log_lines() if line["event"].startswith("unhandled error")]
    assert error["request_id"] == "req-db"
    assert "IntegrityError" in error["exception"] and ", in storing_a_bad_row" in error["exception"]
    assert "sqlstate=23502" in error["exception"] and "column=conversation_id" in error["exception"]
    text = log_lines.text()
    assert "9931" not in text and "Hidden Lane" not in text


def test_a_logged_exception_chain_keeps_classes_and_frames_but_not_texts(log_lines):
    secret = f"contact-said-{uuid.uuid4().hex}"

    def parse(value):
        try:
            return {}[value]
        except KeyError as error:
            raise ValueError(value) from error

    try:
        parse(secret)
    except ValueError as error:
        logging.getLogger("tests.stdlib").exception("stdlib logs it")
        structlog.get_logger("tests.structlog").error("structlog logs it", exc_info=error)

    first, second = log_lines()
    for line in (first, second):
        assert "KeyError" in line["exception"] and "ValueError" in line["exception"]
        assert "The above exception was the direct cause of the following exception:" in line["exception"]
        assert ", in parse" in line["exception"]
    assert secret not in log_lines.text()


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
    reason="needs PostgreSQL (set DATABASE_URL=postgres://...): SQLite casts any text to an integer without an error",
)
def test_a_logged_database_error_names_its_sqlstate_but_not_the_value_it_quotes(db, log_lines):
    secret = f"contact-said-{uuid.uuid4().hex}"
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT CAST(%s AS integer)", [secret])  # invalid input syntax for type integer: "..."
    except DatabaseError:
        logging.getLogger("tests.db").exception("query failed")

    (line,) = log_lines()
    assert "DataError" in line["exception"] and "sqlstate=22P02" in line["exception"]
    assert secret not in log_lines.text()
