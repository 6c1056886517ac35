"""Bursts of short messages (README "Bursts of short messages"): a channel in the latest burst mode answers a
burst once, by its newest message, whose agent sees every message of the burst; the earlier ones answer 200
with the superseded body and are never charged. Real PostgreSQL, requests in threads of their own, the
OpenAI-compatible backend against a threaded stand-in on loopback (or the scripted backend where a test
must act while the agent thinks). Timings are the contract's examples; assertions count rows and calls.
"""

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from api.flow import messaging
from billing.credits import credits_grant
from billing.models import UsageLedgerEntry
from channels_app.models import Channel
from conversations.agents.errors import AgentTimeout
from conversations.models import Conversation, Message
from tests.concurrency.conftest import (
    THREAD_TIMEOUT_SECONDS,
    agent_thinks_until_told,
    books,
    in_thread,
    run_together,
    wait_for_lock_waiters,
)
from tests.conftest import SEED_TEXT, Api
from tests.factories import AIAgentFactory, ChannelFactory, WorkspaceFactory, api_key_for
from tests.llm_stand_in import chat_completion
from webhooks.models import WebhookEvent
from webhooks.services import webhook_set

pytestmark = pytest.mark.django_db(transaction=True)

KEY_VAR = "TEST_BURSTS_LLM_API_KEY"
CHAT_PATH = "/v1/chat/completions"


@dataclass
class Llm:
    """Answers "Answer to <last user message>" after `latency`; keeps every request's messages."""

    server: HTTPServer
    latency: float
    requests: list[list[dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server.expect_request(CHAT_PATH, method="POST").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        messages = request.get_json()["messages"]
        with self.lock:
            self.requests.append(messages)
        time.sleep(self.latency)
        return Response(
            json.dumps(chat_completion(f"Answer to {messages[-1]['content']}")), content_type="application/json"
        )


@pytest.fixture
def llm_server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_VAR, "sk-bursts-test")
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def latest_channel(*, llm_server: HTTPServer | None = None, window_ms: int = 0, credits: int = 100):
    """A workspace with `credits`, a channel in the latest burst mode with `window_ms`, and a key. Its agent
    (1 credit a reply) is the OpenAI-compatible one at `llm_server`, else the factory's."""
    workspace = WorkspaceFactory.create()
    credits_grant(workspace=workspace, amount=credits)
    extra = {}
    if llm_server is not None:
        extra["agent"] = AIAgentFactory(
            workspace=workspace,
            provider="openai",
            base_url=llm_server.url_for("/v1"),
            model="stand-in",
            api_key_env_var=KEY_VAR,
            instructions="",
            timeout_seconds=20,
        )
    channel = ChannelFactory(
        workspace=workspace, burst_mode=Channel.BurstMode.LATEST, burst_window_ms=window_ms, **extra
    )
    return channel, api_key_for(workspace)[1]


def say(text: str, contact: str = "burst@example.com") -> dict[str, Any]:
    return {**SEED_TEXT, "contactIdentifier": contact, "content": {"text": {"body": text}}}


def typed(channel, key: str, texts: list[str], *, apart: float, **headers: str) -> list[Any]:
    """The texts posted by one contact, each from its own thread (a request does not wait for the one before it
    to be answered), `apart` seconds after the one before it was accepted: so they are accepted in order (on a
    busy machine a thread may start late)."""
    inbound = Message.objects.filter(direction=Message.Direction.INBOUND)

    def post(index: int, api: Api) -> Any:
        deadline = time.monotonic() + THREAD_TIMEOUT_SECONDS
        while inbound.count() < index:
            connection.close()  # back to the pool the requests share
            assert time.monotonic() < deadline, "the message before was never accepted"
            time.sleep(0.005)
        connection.close()
        time.sleep(apart if index else 0)
        return api.post(say(texts[index]), **headers)

    return run_together(len(texts), post, channel=channel, key=key)


def user_texts(messages: list[dict[str, Any]]) -> list[str]:
    return [message["content"] for message in messages if message["role"] == "user"]


def assert_books_balanced(workspace) -> None:
    balance, reserved, ledger = books(workspace)
    assert reserved == 0
    assert balance == ledger


def assert_burst_outcome(channel, key: str, responses: list[Any]) -> tuple[list[dict], list[dict]]:
    """Each response 200, superseded or answered as stored; superseded ones name a newer message; the
    newest message is answered. Returns (superseded bodies, answered bodies)."""
    assert [response.status_code for response in responses] == [200] * len(responses), [
        response.content for response in responses
    ]
    bodies = [response.json() for response in responses]
    inbound = {message.pk: message for message in Message.objects.filter(direction=Message.Direction.INBOUND)}
    superseded = [body for body in bodies if "supersededBy" in body]
    answered = [body for body in bodies if "supersededBy" not in body]
    for response, body in zip(responses, bodies, strict=True):
        message = inbound[body["messageId"]]
        assert (
            message.result is not None and bytes(message.result) == response.content
        )  # what polling gives is what the request got
        if "supersededBy" in body:
            assert message.status == Message.Status.SUPERSEDED
            assert body["aiMessages"] == [] and body["usage"]["credits"] == 0
            assert body["usage"]["inputTokens"] == body["usage"]["outputTokens"] == 0
            assert inbound[body["supersededBy"]].seq > message.seq
        else:
            assert message.status == Message.Status.ANSWERED
            assert body["aiMessages"]
    newest = max(inbound.values(), key=lambda message: message.seq)
    assert newest.status == Message.Status.ANSWERED
    # one charge per answer, none for a superseded message; the books balance
    charges = UsageLedgerEntry.objects.filter(kind=UsageLedgerEntry.Kind.CHARGE)
    assert sorted(charges.values_list("message_id", flat=True)) == sorted(body["messageId"] for body in answered)
    assert_books_balanced(channel.workspace)
    return superseded, answered


# --- the contract's examples --------------------------------------------------------------------------------


def test_three_messages_150_ms_apart_with_a_1_s_agent_give_one_reply_to_all_three(llm_server):
    # given
    llm = Llm(llm_server, latency=1.0)
    channel, key = latest_channel(llm_server=llm_server)
    texts = ["hi", "I have a question", "about my order"]

    # when
    responses = typed(channel, key, texts, apart=0.15)

    # then: two superseded bodies naming the third, one reply, one charge
    superseded, answered = assert_burst_outcome(channel, key, responses)
    third = responses[2].json()
    assert [body["messageId"] for body in answered] == [third["messageId"]]
    # each names a newer message, the newest when it was superseded: the chain leads to the answer
    by = {body["messageId"]: body["supersededBy"] for body in superseded}
    for body in superseded:
        newer = body["supersededBy"]
        while newer in by:
            newer = by[newer]
        assert newer == third["messageId"]
    assert [item["content"]["text"]["body"] for item in third["aiMessages"]] == ["Answer to about my order"]
    assert third["usage"]["credits"] == 1
    # the last LLM request holds all three texts, in order
    assert user_texts(llm.requests[-1]) == texts
    # the read API shows the statuses
    listed = (
        Client().get(f"/api/v1/conversations/{third['conversationId']}/messages", HTTP_X_API_KEY=key).json()["data"]
    )
    assert [item["status"] for item in listed] == ["SUPERSEDED", "SUPERSEDED", "ANSWERED", "SENT"]


def test_a_superseded_body_shows_the_conversation_as_it_is_labels_included(llm_server):
    # given: a conversation the agent labelled on an earlier turn
    Llm(llm_server, latency=0.5)
    channel, key = latest_channel(llm_server=llm_server)
    first = Api(Client(), channel, key).post(say("hello")).json()
    Conversation.objects.filter(pk=first["conversationId"]).update(labels=["vip", "billing"])

    # when: a burst of two
    responses = typed(channel, key, ["one more", "thing"], apart=0.1)

    # then: the superseded body's conversation is the one the answer shows, its labels too
    assert [response.status_code for response in responses] == [200, 200]
    superseded, answered = [response.json() for response in responses]
    assert superseded["supersededBy"] == answered["messageId"] and "supersededBy" not in answered
    assert superseded["conversation"]["labels"] == answered["conversation"]["labels"] == ["vip", "billing"]
    assert superseded["conversation"]["id"] == answered["conversation"]["id"] == first["conversationId"]


def test_with_an_800_ms_window_messages_200_ms_apart_cost_exactly_one_llm_call(llm_server):
    # given
    llm = Llm(llm_server, latency=0.2)
    channel, key = latest_channel(llm_server=llm_server, window_ms=800)
    texts = ["hi", "I have a question", "about my order"]

    # when
    responses = typed(channel, key, texts, apart=0.2)

    # then
    superseded, answered = assert_burst_outcome(channel, key, responses)
    assert len(llm.requests) == 1
    assert user_texts(llm.requests[0]) == texts
    assert len(superseded) == 2 and len(answered) == 1


# --- races --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "latency", "window_ms", "apart"),
    [(2, 0.0, 0, 0.0), (5, 0.3, 0, 0.0), (8, 0.0, 300, 0.02), (20, 0.5, 0, 0.0), (20, 0.1, 500, 0.01)],
    ids=["2-instant", "5-slow-agent", "8-window", "20-slow-agent", "20-window"],
)
def test_a_race_of_messages_of_one_contact_is_answered_once_per_burst_each_seeing_its_burst(
    llm_server, count, latency, window_ms, apart
):
    # given
    llm = Llm(llm_server, latency=latency)
    channel, key = latest_channel(llm_server=llm_server, window_ms=window_ms)
    texts = [f"part {index}" for index in range(count)]

    # when
    responses = typed(channel, key, texts, apart=apart)

    # then: every message is answered or superseded; the newest is answered
    superseded, answered = assert_burst_outcome(channel, key, responses)
    assert len(superseded) + len(answered) == count
    # each answer's agent saw its burst: every inbound message since the previous answer, in order
    inbound = list(Message.objects.filter(direction=Message.Direction.INBOUND).order_by("seq"))
    replied = {message.content["text"]["body"] for message in inbound if message.status == Message.Status.ANSWERED}
    last_requests = {user_texts(request)[-1]: request for request in llm.requests}
    seen: list[str] = []
    for message in inbound:
        seen.append(message.content["text"]["body"])
        if message.status == Message.Status.ANSWERED:
            assert user_texts(last_requests[seen[-1]]) == seen
    assert len(replied) == len(answered)
    if window_ms or latency >= 0.3:
        assert len(answered) == 1  # they all met: one burst


def test_a_newer_message_arriving_during_the_record_phase_waits_for_it_and_sees_the_reply(
    race_channel_factory, scripted_agent
):
    # given: the first message in its record phase, held at the workspace row (its last lock)
    channel, key = race_channel_factory(credits=10)
    Channel.objects.filter(pk=channel.pk).update(burst_mode=Channel.BurstMode.LATEST)
    results: dict[str, Any] = {}
    holder = threading.Event()
    release = threading.Event()

    def hold_workspace() -> None:
        from django.db import transaction

        with transaction.atomic():
            from channels_app.models import Workspace

            Workspace.objects.select_for_update().get(pk=channel.workspace_id)
            holder.set()
            assert release.wait(THREAD_TIMEOUT_SECONDS)

    def think(**_: Any) -> str:
        # the agent is done; before the record phase starts, the workspace row is taken
        in_thread(results, "holder", hold_workspace)
        assert holder.wait(THREAD_TIMEOUT_SECONDS)
        return "First answer."

    scripted_agent.script(think)
    first = in_thread(results, "first", lambda: Api(Client(), channel, key).post(say("hi")))
    wait_for_lock_waiters(1)  # the first's settlement waits for the workspace row, its other rows held

    # when: the newer message arrives now
    second = in_thread(results, "second", lambda: Api(Client(), channel, key).post(say("about my order")))
    wait_for_lock_waiters(2)  # it waits for the conversation row the first's record phase holds
    release.set()
    first.join(THREAD_TIMEOUT_SECONDS)
    second.join(THREAD_TIMEOUT_SECONDS)

    # then: the first was answered (its record phase came first), the second saw it and its reply
    assert results["first"].status_code == 200 and results["second"].status_code == 200
    assert results["first"].json()["aiMessages"][0]["content"]["text"]["body"] == "First answer."
    assert "supersededBy" not in results["first"].json()
    assert "supersededBy" not in results["second"].json()
    history = scripted_agent.calls[-1].history
    assert [item.content["text"]["body"] for item in history] == ["hi", "First answer.", "about my order"]
    assert_books_balanced(channel.workspace)


def test_a_newer_message_accepted_while_the_agent_thinks_discards_the_reply(
    race_channel_factory, scripted_agent, settings
):
    # given: the first message's agent thinking, on a channel with a webhook
    channel, key = race_channel_factory(credits=10)
    Channel.objects.filter(pk=channel.pk).update(burst_mode=Channel.BurstMode.LATEST)
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    webhook_set(channel_id=channel.pk, url="http://127.0.0.1:9/hook")
    thinking, go = agent_thinks_until_told(scripted_agent)
    results: dict[str, Any] = {}
    first = in_thread(results, "first", lambda: Api(Client(), channel, key).post(say("hi"), idempotency_key="b-1"))
    assert thinking.wait(THREAD_TIMEOUT_SECONDS)

    # when: a newer message is answered meanwhile
    second = Api(Client(), channel, key).post(say("about my order"))
    first.join(THREAD_TIMEOUT_SECONDS)
    assert not first.is_alive()  # the first request did not wait for its agent call: abandoned
    go.set()

    # then: the first's reply is discarded, its body superseded, not charged
    assert second.status_code == 200
    body = results["first"].json()
    assert body["supersededBy"] == second.json()["messageId"]
    assert body["aiMessages"] == [] and body["usage"]["credits"] == 0
    assert Message.objects.filter(direction=Message.Direction.OUTBOUND).count() == 1
    assert_books_balanced(channel.workspace)
    assert UsageLedgerEntry.objects.filter(kind=UsageLedgerEntry.Kind.CHARGE).count() == 1
    # the webhook gets the same body, as message.replied, for each of the two
    events = [json.loads(event.payload) for event in WebhookEvent.objects.filter(type="message.replied")]
    assert sorted(json.dumps(event["data"], sort_keys=True) for event in events) == sorted(
        json.dumps(response.json(), sort_keys=True) for response in (results["first"], second)
    )

    # and its idempotent retry replays the superseded body, byte for byte, with no agent call
    calls = scripted_agent.count
    retry = Api(Client(), channel, key).post(say("hi"), idempotency_key="b-1")
    assert retry.status_code == 200
    assert retry.content == results["first"].content
    assert retry["Idempotent-Replayed"] == "true"
    assert scripted_agent.count == calls
    assert_books_balanced(channel.workspace)


def test_an_agent_failure_after_a_newer_message_arrived_is_superseded_not_failed(
    race_channel_factory, scripted_agent, monkeypatch
):
    # given: the first message's agent, which will fail; its request looks at the burst only after the call
    # (else it would be superseded while the agent thinks, the test above)
    monkeypatch.setattr(messaging, "_BURST_POLL_SECONDS", THREAD_TIMEOUT_SECONDS)
    channel, key = race_channel_factory(credits=10)
    Channel.objects.filter(pk=channel.pk).update(burst_mode=Channel.BurstMode.LATEST)
    thinking, go = threading.Event(), threading.Event()

    def fail(**_: Any) -> None:
        thinking.set()
        assert go.wait(THREAD_TIMEOUT_SECONDS)
        raise AgentTimeout()

    scripted_agent.script(fail)
    results: dict[str, Any] = {}
    first = in_thread(results, "first", lambda: Api(Client(), channel, key).post(say("hi")))
    assert thinking.wait(THREAD_TIMEOUT_SECONDS)

    # when: a newer message is answered, then the first's agent fails
    second = Api(Client(), channel, key).post(say("about my order"))
    go.set()
    first.join(THREAD_TIMEOUT_SECONDS)

    # then: the first is superseded (200), not a 504
    assert results["first"].status_code == 200, results["first"].content
    assert results["first"].json()["supersededBy"] == second.json()["messageId"]
    assert Message.objects.get(pk=results["first"].json()["messageId"]).status == Message.Status.SUPERSEDED
    assert_books_balanced(channel.workspace)


def test_a_message_waiting_for_its_window_returns_at_once_when_superseded(race_channel_factory, scripted_agent):
    # given: a 4 s window
    channel, key = race_channel_factory(credits=10)
    Channel.objects.filter(pk=channel.pk).update(burst_mode=Channel.BurstMode.LATEST, burst_window_ms=4000)
    results: dict[str, Any] = {}
    started = time.monotonic()
    first = in_thread(results, "first", lambda: Api(Client(), channel, key).post(say("hi")))
    time.sleep(0.3)

    # when: a newer message arrives
    second = in_thread(results, "second", lambda: Api(Client(), channel, key).post(say("there")))
    first.join(THREAD_TIMEOUT_SECONDS)
    first_done = time.monotonic() - started
    second.join(THREAD_TIMEOUT_SECONDS)

    # then: the first returned long before the window would have ended; one agent call
    assert "supersededBy" in results["first"].json()
    assert first_done < 3  # the window would have ended at 4 s
    assert scripted_agent.count == 1
    assert [item.content["text"]["body"] for item in scripted_agent.calls[0].history] == ["hi", "there"]


def test_a_contact_who_never_stops_typing_is_answered_within_the_cap(race_channel_factory, scripted_agent, monkeypatch):
    # given: the cap lowered to 1 s, a window of 0.6 s, a message every 0.2 s for 2.4 s
    monkeypatch.setattr(messaging, "_BURST_WINDOW_MAX", messaging.timedelta(seconds=1))
    channel, key = race_channel_factory(credits=50)
    Channel.objects.filter(pk=channel.pk).update(burst_mode=Channel.BurstMode.LATEST, burst_window_ms=600)
    scripted_agent.delay = 0.3
    texts = [f"word {index}" for index in range(12)]

    # when
    started = time.monotonic()
    responses = typed(channel, key, texts, apart=0.2)

    # then: an answer before the contact stopped, by the message that was newest at the cap, for all before it
    superseded, answered = assert_burst_outcome(channel, key, responses)
    assert len(answered) >= 2
    first_answer = Message.objects.get(pk=answered[0]["messageId"])
    assert first_answer.burst_final
    first_message = Message.objects.filter(direction=Message.Direction.INBOUND).order_by("seq").first()
    reply = Message.objects.get(reply_to=first_answer)
    assert (reply.created_at - first_message.created_at).total_seconds() < 1 + 0.3 + 1.0  # cap + agent + slack
    assert reply.created_at < Message.objects.filter(direction=Message.Direction.INBOUND).order_by("-seq")[0].created_at
    # the last burst's agent sees everything the contact wrote
    last = scripted_agent.calls[-1].history
    assert [item.content["text"]["body"] for item in last if item.role == "user"] == texts
    assert time.monotonic() - started < THREAD_TIMEOUT_SECONDS


# --- the other reply modes ------------------------------------------------------------------------------------


def test_the_async_and_streaming_modes_give_the_superseded_body_to_polling_and_the_stream(
    race_channel_factory, scripted_agent
):
    # given: an asynchronous message whose agent thinks, and a streamed one behind it
    channel, key = race_channel_factory(credits=10)
    Channel.objects.filter(pk=channel.pk).update(burst_mode=Channel.BurstMode.LATEST)
    thinking, go = agent_thinks_until_told(scripted_agent)  # the first message's agent call
    streaming, stream_go = agent_thinks_until_told(scripted_agent)  # the second's
    api = Api(Client(), channel, key)
    accepted = api.post(say("hi"), HTTP_PREFER="respond-async")
    assert accepted.status_code == 202
    assert thinking.wait(THREAD_TIMEOUT_SECONDS)
    results: dict[str, Any] = {}
    streamed = in_thread(
        results,
        "stream",
        lambda: b"".join(
            Api(Client(), channel, key).post(say("there"), HTTP_ACCEPT="text/event-stream").streaming_content
        ),
    )
    assert streaming.wait(THREAD_TIMEOUT_SECONDS)

    # when: the third message is synchronous, and then both agents end
    third = api.post(say("about my order"), HTTP_PREFER="respond-async")
    assert third.status_code == 202
    go.set()
    stream_go.set()
    streamed.join(THREAD_TIMEOUT_SECONDS)

    # then: the stream's done event is the superseded body; polling gives it too
    stream = results["stream"].split(b"\n\n")
    done = [block for block in stream if b"event: done" in block.split(b"\n")]
    assert len(done) == 1
    body = json.loads(done[0].split(b"data: ", 1)[1])
    assert body["supersededBy"] == third.json()["messageId"]
    deadline = time.monotonic() + THREAD_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        polled = api.client.get(accepted["Location"], HTTP_X_API_KEY=key).json()
        if polled["result"] is not None:
            break
        time.sleep(0.05)
    assert polled["message"]["status"] == "SUPERSEDED"
    assert polled["result"]["supersededBy"] == third.json()["messageId"]
    while Message.objects.filter(pk=third.json()["messageId"], status=Message.Status.PENDING).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert Message.objects.get(pk=third.json()["messageId"]).status == Message.Status.ANSWERED
    assert_books_balanced(channel.workspace)


def test_queue_mode_answers_every_message_in_order(race_channel_factory, scripted_agent):
    # given: the default mode
    channel, key = race_channel_factory(credits=10)
    assert channel.burst_mode == Channel.BurstMode.QUEUE
    scripted_agent.delay = 0.2

    # when
    responses = typed(channel, key, ["hi", "I have a question", "about my order"], apart=0.05)

    # then: three answers, three charges
    assert all(response.status_code == 200 and "supersededBy" not in response.json() for response in responses)
    assert scripted_agent.count == 3
    assert UsageLedgerEntry.objects.filter(kind=UsageLedgerEntry.Kind.CHARGE).count() == 3
