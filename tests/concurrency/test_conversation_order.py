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
from django.db import connection
from django.test import Client
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from billing.credits import credits_grant
from channels_app.models import AIAgent
from conversations.models import Message
from tests.concurrency.conftest import run_together
from tests.conftest import SEED_TEXT, Api
from tests.factories import AIAgentFactory, ChannelFactory, WorkspaceFactory, api_key_for
from tests.llm_stand_in import chat_completion

pytestmark = pytest.mark.django_db(transaction=True)

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
    latency: float = AGENT_LATENCY
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    all_arrived: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.server.expect_request(CHAT_PATH, method="POST").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        # the conversation as the model sees it (not the system messages: the contact's context)
        messages = [message for message in request.get_json()["messages"] if message["role"] != "system"]
        call = Call(question=messages[-1]["content"], messages=messages, arrived=time.monotonic())
        with self.lock:
            self.calls.append(call)
            if len(self.calls) >= self.gate:
                self.all_arrived.set()
        self.all_arrived.wait(timeout=GATE_TIMEOUT)
        time.sleep(self.latency)
        call.answered = time.monotonic()
        return Response(json.dumps(chat_completion(f"Answer to {call.question}")), content_type="application/json")

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


# --- a queue longer than the lease ----------------------------------------------------------------------

# Lowered so that a queue of a few messages outlasts the lease several times over: the lease is
# max(PROCESSING_LEASE_SECONDS, media download + the agent's timeout + margin) = max(1, 0.1 + 1.5 + 0.5) =
# 2.1 s, and each message of the queue takes SLOW_LATENCY at the agent.
QUEUE_AGENT_TIMEOUT = 1.5
SLOW_LATENCY = 0.5
QUEUE_LENGTH = 7  # about 3.5 s at the agent, one after the other


@pytest.fixture
def short_lease(settings, monkeypatch, setup):
    from api.flow import messaging

    settings.PROCESSING_LEASE_SECONDS = 1
    settings.MEDIA_DOWNLOAD_TIMEOUT_SECONDS = 0.1
    settings.CONVERSATION_TURN_WAIT_SECONDS = 30  # far longer than the queue: nobody gives up waiting
    # raising=False: the test must also run (and fail) on code that has no such constants.
    monkeypatch.setattr(messaging, "LEASE_MARGIN_SECONDS", 0.5, raising=False)
    monkeypatch.setattr(messaging, "LEASE_RENEW_SECONDS", 0.2, raising=False)
    channel, key = setup
    AIAgent.objects.filter(pk=channel.agent_id).update(timeout_seconds=QUEUE_AGENT_TIMEOUT)
    return channel, key


def test_a_queue_longer_than_the_lease_is_answered_in_order(short_lease, llm_server) -> None:
    # given: a slow agent
    channel, key = short_lease
    llm = RecordingLlm(llm_server, latency=SLOW_LATENCY)
    bodies = [say(f"Question {index}") for index in range(QUEUE_LENGTH)]

    # when: a burst of messages to one conversation, each with its idempotency key
    responses = run_together(
        QUEUE_LENGTH,
        lambda index, api: api.post(bodies[index], idempotency_key=f"queue-{index}"),
        channel=channel,
        key=key,
    )

    # then: all answered, one after the other, each seeing every earlier message and its reply
    assert [response.status_code for response in responses] == [200] * QUEUE_LENGTH, [r.content for r in responses]
    calls = llm.by_arrival()
    assert len(calls) == QUEUE_LENGTH
    transcript: list[dict[str, str]] = []
    for earlier, call in zip([None, *calls], calls, strict=False):
        if earlier is not None:
            assert call.arrived >= earlier.answered, "two messages of one conversation were with the agent at once"
        assert call.messages == [*transcript, user(call.question)]
        transcript += [user(call.question), assistant(f"Answer to {call.question}")]
    stored = [m.content["text"]["body"] for m in Message.objects.order_by("seq", "part")]
    assert stored == [m["content"] for m in transcript]
    assert calls[-1].answered - calls[0].arrived > 2.1  # and the queue did outlast the lease


def test_a_retry_of_a_message_still_waiting_past_the_lease_does_not_take_it_over(short_lease, llm_server) -> None:
    # given: messages ahead in the queue, and one more behind them with an idempotency key
    channel, key = short_lease
    llm = RecordingLlm(llm_server, latency=SLOW_LATENCY)
    ahead = QUEUE_LENGTH - 1
    results: dict[str, Any] = {}

    def post_ahead() -> None:
        results["ahead"] = run_together(
            ahead, lambda index, api: api.post(say(f"Ahead {index}")), channel=channel, key=key
        )

    def post_last() -> None:
        try:
            results["last"] = Api(Client(), channel, key).post(say("Last"), idempotency_key="last-1")
        finally:
            connection.close()

    first = threading.Thread(target=post_ahead)
    first.start()
    deadline = time.monotonic() + 10
    while Message.objects.filter(direction="INBOUND").count() < ahead and time.monotonic() < deadline:
        time.sleep(0.02)
    last = threading.Thread(target=post_last)
    last.start()
    while not Message.objects.filter(content__text__body="Last").exists() and time.monotonic() < deadline:
        time.sleep(0.02)

    # when: past its lease (2.1 s), while it still waits for its turn, the same request comes again
    time.sleep(2.5)
    still_waiting = Message.objects.get(content__text__body="Last").status == "PENDING"
    retry = Api(Client(), channel, key).post(say("Last"), idempotency_key="last-1")
    first.join(timeout=30)
    last.join(timeout=30)

    # then: the last message waited for all the others (at the agent one after the other, ~3 s)...
    assert still_waiting, "the last message did not wait for the ones ahead of it"
    # ...and the retry is told to wait; the first request keeps the key and answers after all the others
    assert not first.is_alive() and not last.is_alive()
    assert retry.status_code == 409 and retry.json()["error"]["code"] == "idempotency_in_progress", retry.content
    assert [response.status_code for response in results["ahead"]] == [200] * ahead
    assert results["last"].status_code == 200, results["last"].content
    calls = llm.by_arrival()
    assert [call.question for call in calls][-1] == "Last" and len(calls) == QUEUE_LENGTH
    assert len(calls[-1].messages) == 2 * QUEUE_LENGTH - 1  # every earlier message and its reply
