"""Streaming (README "Streaming"): `Accept: text/event-stream` answers with Server-Sent Events.

In process (Django's client, the scripted agent, which cannot stream: its messages come whole), then
against a real gunicorn with the OpenAI-compatible agent and a loopback LLM stand-in that streams its
answer in pieces (tests/llm_stand_in.py), read by a real HTTP client as the events arrive. The phases run in
a thread beside the request's, so these tests need committed rows and PostgreSQL, except those that end
before any thread starts.
"""

import http.client
import json
import threading
from pathlib import Path

import pytest

from api.models import IdempotencyRecord
from billing.models import UsageLedgerEntry
from conversations.agents.base import AgentReply
from conversations.agents.errors import AgentTimeout
from conversations.agents.openai_agent import OpenAICompatibleAgent
from conversations.models import Message
from conversations.selectors import agent_config
from tests.api.test_replies_later import wait_for
from tests.conftest import SEED_TEXT, error_of
from tests.factories import AIAgentFactory, ChannelFactory
from tests.live_gunicorn import database_url_for_servers, gunicorn
from tests.llm_stand_in import StandIn, Step, start

STREAM = {"HTTP_ACCEPT": "text/event-stream"}
KEY_VAR = "TEST_CHANNELS_LLM_API_KEY"
WAIT_SECONDS = 60


def parse(raw: bytes) -> list[tuple[str, bytes]]:
    """(event, data) of each event; comments left out."""
    events = []
    for block in raw.split(b"\n\n"):
        lines = [line for line in block.split(b"\n") if line and not line.startswith(b":")]
        if lines:
            fields = dict(line.split(b": ", 1) for line in lines)
            events.append((fields[b"event"].decode(), fields[b"data"]))
    return events


def streamed(response) -> list[tuple[str, bytes]]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    return parse(b"".join(response.streaming_content))


@pytest.fixture
def stand_in():
    stand_in = StandIn()
    server = start(stand_in)
    yield stand_in
    server.shutdown()


# --- in process ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_stream_has_the_deltas_then_each_message_then_done_with_the_stored_200_body(api, channel, scripted_agent):
    # given: an answer of two messages
    scripted_agent.take_over(channel.agent)
    scripted_agent.script(AgentReply(texts=["First part.", "Second part."], input_tokens=3, output_tokens=4))

    # when
    events = streamed(api.post(SEED_TEXT, idempotency_key="k-stream-1", **STREAM))

    # then: a backend that cannot stream gives its messages whole, as deltas
    assert [name for name, _ in events] == ["delta", "delta", "message", "message", "done"]
    assert [json.loads(data) for _, data in events[:2]] == [{"text": "First part."}, {"text": "Second part."}]
    done = events[-1][1]
    body = json.loads(done)
    assert [json.loads(data) for _, data in events[2:4]] == body["aiMessages"]
    assert [item["content"]["text"]["body"] for item in body["aiMessages"]] == ["First part.", "Second part."]
    # exactly the body stored for replay
    assert bytes(IdempotencyRecord.objects.get().response_body) == done
    replay = api.post(SEED_TEXT, idempotency_key="k-stream-1")
    assert (replay.status_code, replay.content) == (200, done)
    # and a replay that asks for a stream: the stream's end again, its message events and done
    assert streamed(api.post(SEED_TEXT, idempotency_key="k-stream-1", **STREAM)) == events[2:]
    assert scripted_agent.count == 1


@pytest.mark.django_db(transaction=True)
def test_a_failure_once_the_agent_started_is_an_error_event_and_is_recorded(api, channel, workspace, scripted_agent):
    scripted_agent.take_over(channel.agent)
    scripted_agent.script(AgentTimeout())

    events = streamed(api.post(SEED_TEXT, **STREAM))

    assert [name for name, _ in events] == ["error"]
    error = json.loads(events[0][1])
    assert error["success"] is False and error["error"]["code"] == "agent_timeout"
    message = Message.objects.get(direction=Message.Direction.INBOUND)
    assert (message.status, message.error_code) == (Message.Status.FAILED, "agent_timeout")
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (100, 0)


def event_blocks(response) -> list[dict[bytes, bytes]]:
    """Each event's fields as sent (comments left out), the raw bytes of the stream kept too."""
    raw = b"".join(response.streaming_content)
    blocks = [block for block in raw.split(b"\n\n") if block and not block.startswith(b":")]
    return [dict(line.split(b": ", 1) for line in block.split(b"\n")) for block in blocks]


@pytest.mark.django_db(transaction=True)
def test_every_event_has_an_id_and_a_retry_replays_the_finished_stream_with_the_same_ids(api, channel, scripted_agent):
    # given: a streamed answer of two messages
    scripted_agent.take_over(channel.agent)
    scripted_agent.script(AgentReply(texts=["First part.", "Second part."], input_tokens=3, output_tokens=4))
    first = event_blocks(api.post(SEED_TEXT, idempotency_key="k-ids", **STREAM))

    # when: the client lost the stream and retries with the same key, asking for a stream again
    replay = api.post(SEED_TEXT, idempotency_key="k-ids", **STREAM)

    # then: every event has an id: deltas `<message id>:<n>`, each message its reply's id, done the message's
    body = json.loads(first[-1][b"data"])
    replies = [item["id"] for item in body["aiMessages"]]
    message_id = body["messageId"]
    assert [(block[b"event"], block[b"id"].decode()) for block in first] == [
        (b"delta", f"{message_id}:1"),
        (b"delta", f"{message_id}:2"),
        (b"message", replies[0]),
        (b"message", replies[1]),
        (b"done", message_id),
    ]
    # and the replay is the stream's end again, byte for byte (the deltas are not stored)
    assert replay["Idempotent-Replayed"] == "true"
    assert event_blocks(replay) == first[2:]
    assert scripted_agent.count == 1


@pytest.mark.django_db(transaction=True)
def test_an_error_event_has_the_messages_id(api, channel, scripted_agent):
    scripted_agent.take_over(channel.agent)
    scripted_agent.script(AgentTimeout())

    [error] = event_blocks(api.post(SEED_TEXT, **STREAM))

    assert (error[b"event"], error[b"id"].decode()) == (b"error", Message.objects.get(direction="INBOUND").pk)


@pytest.mark.django_db(transaction=True)
def test_a_synchronous_answer_retried_as_a_stream_replays_its_messages_and_done(api, channel, scripted_agent):
    # given: an answer given as JSON
    scripted_agent.take_over(channel.agent)
    scripted_agent.script(AgentReply(texts=["Only part."], input_tokens=1, output_tokens=1))
    answered = api.post(SEED_TEXT, idempotency_key="k-sync")
    assert answered.status_code == 200

    # when
    blocks = event_blocks(api.post(SEED_TEXT, idempotency_key="k-sync", **STREAM))

    # then
    [reply] = answered.json()["aiMessages"]
    assert [block[b"event"] for block in blocks] == [b"message", b"done"]
    assert (json.loads(blocks[0][b"data"]), blocks[0][b"id"].decode()) == (reply, reply["id"])
    assert blocks[1][b"data"] == answered.content


def test_an_error_before_the_agent_starts_is_the_usual_json_response(api):
    response = api.post(SEED_TEXT, channel_id="ch_missing", **STREAM)

    assert response["Content-Type"] == "application/json"
    assert error_of(response, status=404)["code"] == "channel_not_found"


def test_an_invalid_body_asking_for_a_stream_is_a_json_400_not_a_406(api):
    response = api.post({**SEED_TEXT, "type": "STICKER"}, **STREAM)

    error_of(response, status=400)


# --- the OpenAI-compatible agent's stream ----------------------------------------------------------------------


def test_the_openai_agent_yields_the_pieces_as_they_come_then_the_reply_with_the_usage(
    stand_in, workspace, monkeypatch
):
    monkeypatch.setenv(KEY_VAR, "sk-test")
    gate = threading.Event()
    stand_in.script(Step("", pieces=["Orders ", "ship ", "today."], gate=gate))
    agent = agent_config(
        agent=AIAgentFactory.create(
            workspace=workspace, provider="openai", base_url=stand_in.url, model="m", api_key_env_var=KEY_VAR
        )
    )
    from conversations.agents.base import HistoryItem

    stream = OpenAICompatibleAgent().reply_stream(
        agent=agent, history=[HistoryItem(role="user", type="TEXT", content={"text": {"body": "When?"}})]
    )

    assert next(stream) == "Orders "  # while the stand-in holds the rest
    gate.set()
    rest = list(stream)
    assert rest[:2] == ["ship ", "today."]
    reply = rest[2]
    assert isinstance(reply, AgentReply)
    assert (reply.texts, reply.input_tokens, reply.output_tokens) == (["Orders ship today."], 10, 5)
    assert stand_in.requests[0]["stream"] is True
    assert stand_in.requests[0]["stream_options"] == {"include_usage": True}


def test_the_openai_agent_stream_keeps_the_agents_deadline(stand_in, workspace, monkeypatch):
    monkeypatch.setenv(KEY_VAR, "sk-test")
    stand_in.script(Step("", pieces=["Slow ", "answer."], pause=3.0))
    row = AIAgentFactory.create(
        workspace=workspace, provider="openai", base_url=stand_in.url, model="m", api_key_env_var=KEY_VAR
    )
    row.timeout_seconds = 1
    from conversations.agents.base import HistoryItem

    with pytest.raises(AgentTimeout):
        list(
            OpenAICompatibleAgent().reply_stream(
                agent=agent_config(agent=row),
                history=[HistoryItem(role="user", type="TEXT", content={"text": {"body": "When?"}})],
            )
        )


# --- a real gunicorn, a real HTTP client ----------------------------------------------------------------------


@pytest.fixture
def live(transactional_db, workspace, api_key, stand_in, tmp_path: Path):
    agent = AIAgentFactory.create(
        workspace=workspace, provider="openai", base_url=stand_in.url, model="m", api_key_env_var=KEY_VAR
    )
    channel = ChannelFactory(workspace=workspace, agent=agent)
    with gunicorn(tmp_path / "server.log", DATABASE_URL=database_url_for_servers(), **{KEY_VAR: "sk-test"}) as server:
        yield server, channel, api_key


def open_stream(server, channel, key: str, idempotency_key: str):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_SECONDS)
    headers = {
        "X-API-Key": key,
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "X-Idempotency-Key": idempotency_key,
    }
    conn.request("POST", f"/api/v1/channels/{channel.pk}/messages", json.dumps(SEED_TEXT), headers)
    response = conn.getresponse()
    assert response.status == 200, response.read()
    assert response.getheader("Content-Type") == "text/event-stream"
    return conn, response


def next_event(response) -> tuple[str, bytes]:
    """Read lines until one whole event (comments skipped)."""
    fields: dict[bytes, bytes] = {}
    while True:
        line = response.readline()
        assert line, "the stream ended"
        line = line.rstrip(b"\n")
        if not line:
            if fields:
                return fields[b"event"].decode(), fields[b"data"]
            continue
        if not line.startswith(b":"):
            name, value = line.split(b": ", 1)
            fields[name] = value


def test_over_gunicorn_the_first_delta_arrives_while_the_agent_still_writes(live, stand_in):
    server, channel, key = live
    gate = threading.Event()
    step = Step("", pieces=["Hello ", "from ", "the model."], gate=gate)
    stand_in.script(step)

    conn, response = open_stream(server, channel, key, "k-live-1")
    try:
        # the first piece, while the stand-in holds the rest until the client has it
        assert next_event(response) == ("delta", b'{"text":"Hello "}')
        assert not step.finished.is_set()
        gate.set()
        events = [next_event(response) for _ in range(4)]
    finally:
        conn.close()

    assert events[:2] == [("delta", b'{"text":"from "}'), ("delta", b'{"text":"the model."}')]
    assert events[2][0] == "message"
    assert events[3][0] == "done"
    body = json.loads(events[3][1])
    assert body["aiMessages"][0]["content"]["text"]["body"] == "Hello from the model."
    assert json.loads(events[2][1]) == body["aiMessages"][0]
    assert bytes(IdempotencyRecord.objects.get().response_body) == events[3][1]


def test_over_gunicorn_a_client_gone_mid_stream_still_gets_its_message_answered_and_replayable(live, stand_in):
    server, channel, key = live
    gate = threading.Event()
    # pauses between the later pieces: the server writes some of them to the closed connection, which
    # fails, and closes the response's generator while the agent still writes
    step = Step("", pieces=["Partly ", "read ", "answer ", "to ", "the ", "end."], gate=gate, pause=0.3)
    stand_in.script(step)

    # when: the client reads the first piece, then goes away
    conn, response = open_stream(server, channel, key, "k-live-2")
    assert next_event(response)[0] == "delta"
    conn.sock.close() if conn.sock else None
    conn.close()
    gate.set()

    # then: answered and recorded all the same, once
    wait_for(lambda: Message.objects.filter(direction="INBOUND", status=Message.Status.ANSWERED).exists())
    message = Message.objects.get(direction=Message.Direction.INBOUND)
    assert [reply.content["text"]["body"] for reply in Message.objects.filter(reply_to=message)] == [
        "Partly read answer to the end."
    ]
    assert UsageLedgerEntry.objects.filter(message=message).count() == 1
    wait_for(lambda: IdempotencyRecord.objects.get().state == IdempotencyRecord.State.COMPLETED)
    stored = bytes(IdempotencyRecord.objects.get().response_body)

    # and a retry with the key replays the stream's end: its message event, then done
    conn, response = open_stream(server, channel, key, "k-live-2")
    try:
        assert response.getheader("Idempotent-Replayed") == "true"
        [reply] = json.loads(stored)["aiMessages"]
        name, data = next_event(response)
        assert (name, json.loads(data)) == ("message", reply)
        assert next_event(response) == ("done", stored)
    finally:
        conn.close()
    assert len(stand_in.requests) == 1


def test_over_gunicorn_a_provider_stream_cut_before_it_finished_is_an_error_nothing_charged_key_free(
    live, stand_in, workspace
):
    server, channel, key = live
    # given: a provider that sends three pieces, then closes without a finish_reason or [DONE]
    stand_in.script(Step("", pieces=["Half ", "an ", "answ"], cut=True), "The whole answer.")

    # when
    conn, response = open_stream(server, channel, key, "k-cut")
    try:
        events = [next_event(response) for _ in range(4)]
    finally:
        conn.close()

    # then: the pieces went out as they came, then an error, not a done
    assert [name for name, _ in events] == ["delta", "delta", "delta", "error"]
    error = json.loads(events[3][1])
    assert error["error"]["code"] == "agent_unavailable"
    assert error["error"]["details"] == {"reason": "incomplete_stream"}
    message = Message.objects.get(direction=Message.Direction.INBOUND)
    assert (message.status, message.error_code) == (Message.Status.FAILED, "agent_unavailable")
    assert not Message.objects.filter(reply_to=message).exists()
    assert not UsageLedgerEntry.objects.filter(message=message).exists()
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (100, 0)

    # and: the key is free: a retry answers the same message, whole, charged once
    conn, response = open_stream(server, channel, key, "k-cut")
    try:
        events = [next_event(response) for _ in range(5)]
    finally:
        conn.close()
    assert events[-1][0] == "done"
    body = json.loads(events[-1][1])
    assert body["messageId"] == message.pk
    assert body["aiMessages"][0]["content"]["text"]["body"] == "The whole answer."
    assert UsageLedgerEntry.objects.filter(message=message).count() == 1


@pytest.mark.django_db(transaction=True)
def test_respond_async_wins_over_a_stream(api, channel, scripted_agent):
    scripted_agent.take_over(channel.agent)

    response = api.post(SEED_TEXT, HTTP_PREFER="respond-async", HTTP_ACCEPT="text/event-stream")

    assert response.status_code == 202, response.content
    assert response["Content-Type"] == "application/json"
    message_id = response.json()["messageId"]
    wait_for(lambda: Message.objects.get(pk=message_id).status == Message.Status.ANSWERED)
