"""Idempotency keys on the messages endpoint, one request at a time (SQLite and PostgreSQL).

The concurrent cases (many requests with one key at once) are in tests/concurrency/.
"""

import json
import threading
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.test import Client
from django.utils import timezone
from werkzeug import Request, Response

from api.models import IdempotencyRecord
from billing.credits import credits_grant
from billing.models import UsageLedgerEntry
from channels_app.models import Channel, Workspace
from contacts.models import Contact
from conversations.agents import openai_agent
from conversations.models import Conversation, Message
from tests.conftest import SEED_TEXT, Api, error_of
from tests.factories import AIAgentFactory, ChannelFactory, api_key_for

KEY = "6f1c2a0e-5d0b-4c61-9a57-2f0e3f1d9b11"
OTHER_TEXT = {**SEED_TEXT, "content": {"text": {"body": "Can I get a refund?"}}}


@pytest.fixture
def agent_calls(scripted_agent, channel):
    """The calls to the channel's agent (the agent is the external boundary of a request): the scripted
    backend, answering as the built-in agent would."""
    scripted_agent.take_over(channel.agent)
    return scripted_agent.calls


def inbound_count() -> int:
    return Message.objects.filter(direction=Message.Direction.INBOUND).count()


def charges() -> list[int]:
    return list(UsageLedgerEntry.objects.filter(kind=UsageLedgerEntry.Kind.CHARGE).values_list("delta", flat=True))


def assert_books_balance(workspace: Workspace, *, balance: int) -> None:
    workspace.refresh_from_db()
    ledger = sum(UsageLedgerEntry.objects.filter(workspace=workspace).values_list("delta", flat=True))
    assert (workspace.credit_balance, workspace.credit_reserved, ledger) == (balance, 0, balance)


# --- replay ----------------------------------------------------------------------------------------------


def test_replay_is_byte_identical_with_header_and_runs_nothing_again(api, workspace, agent_calls):
    # given
    first = api.post(idempotency_key=KEY)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first

    # when: the same request again, its JSON keys reordered and spaced differently
    reordered = json.dumps(dict(reversed(list(SEED_TEXT.items()))), indent=2)
    replays = [api.post(idempotency_key=KEY), api.post(raw=reordered, idempotency_key=KEY)]

    # then
    for replay in replays:
        assert replay.status_code == 200
        assert replay["Idempotent-Replayed"] == "true"
        assert replay.content == first.content
    assert len(agent_calls) == 1
    assert (inbound_count(), Message.objects.count(), Contact.objects.count(), Conversation.objects.count()) == (
        1,
        2,
        1,
        1,
    )
    assert charges() == [-1]
    assert_books_balance(workspace, balance=99)


def test_replay_needs_no_credits_and_charges_nothing(api, workspace, agent_calls):
    first = api.post(idempotency_key=KEY)
    Workspace.objects.filter(pk=workspace.pk).update(credit_balance=0)

    replay = api.post(idempotency_key=KEY)

    assert (replay.status_code, replay.content, replay["Idempotent-Replayed"]) == (200, first.content, "true")
    assert len(agent_calls) == 1 and charges() == [-1]


def test_idempotency_key_header_is_a_synonym(api, agent_calls):
    # given: the IETF draft's header name
    first = api.post(HTTP_IDEMPOTENCY_KEY=KEY)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first

    # when: replayed under either name
    again = api.post(HTTP_IDEMPOTENCY_KEY=KEY)
    spec_name = api.post(idempotency_key=KEY)

    # then: it is the same key
    for replay in (again, spec_name):
        assert (replay.status_code, replay.content, replay["Idempotent-Replayed"]) == (200, first.content, "true")
    assert len(agent_calls) == 1 and inbound_count() == 1
    assert IdempotencyRecord.objects.get().key == KEY


# --- reuse -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"body": OTHER_TEXT},
        {"body": {**SEED_TEXT, "contactIdentifier": "someone-else@example.com"}},
        {"body": {**SEED_TEXT, "contactName": "Another Name"}},
        {"other_channel": True},
    ],
    ids=["other-text", "other-contact", "other-name", "other-channel"],
)
def test_same_key_with_a_different_request_is_422(api, channel, agent_calls, change):
    # given
    assert api.post(idempotency_key=KEY).status_code == 200
    other_channel = ChannelFactory(workspace=channel.workspace) if change.get("other_channel") else None

    # when
    response = api.post(
        change.get("body", SEED_TEXT), idempotency_key=KEY, channel_id=other_channel.pk if other_channel else None
    )

    # then
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "idempotency_key_reused" and error["details"] == {"header": "X-Idempotency-Key"}
    assert "Idempotent-Replayed" not in response
    assert len(agent_calls) == 1 and inbound_count() == 1 and charges() == [-1]


def test_same_key_in_two_workspaces_is_two_independent_requests(api, client, workspace, scripted_agent, agent_calls):
    # given: another workspace, its channel and key
    other_channel = ChannelFactory()
    scripted_agent.take_over(other_channel.agent)
    credits_grant(workspace=other_channel.workspace, amount=10)
    other = Api(client, other_channel, api_key_for(other_channel.workspace)[1])

    # when: both post the same key and body
    mine, theirs = api.post(idempotency_key=KEY), other.post(idempotency_key=KEY)

    # then: neither is a replay of the other, and each replays its own response
    assert mine.status_code == theirs.status_code == 200
    assert "Idempotent-Replayed" not in mine and "Idempotent-Replayed" not in theirs
    assert mine.json()["messageId"] != theirs.json()["messageId"]
    assert mine.json()["contactId"] != theirs.json()["contactId"]
    assert len(agent_calls) == 2
    assert IdempotencyRecord.objects.filter(key=KEY).count() == 2
    assert api.post(idempotency_key=KEY).content == mine.content
    assert other.post(idempotency_key=KEY).content == theirs.content
    assert_books_balance(workspace, balance=99)
    assert_books_balance(other_channel.workspace, balance=9)


# --- the key itself --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "k" * 256, "clé-1", "emoji-\U0001f600", "tab\there", "new\nline", "nul\x00", "del\x7f", "esc\x1b[0m"],
    ids=["empty", "256-chars", "latin-1", "emoji", "tab", "newline", "nul", "del", "escape"],
)
@pytest.mark.parametrize("header", ["HTTP_X_IDEMPOTENCY_KEY", "HTTP_IDEMPOTENCY_KEY"])
def test_invalid_idempotency_key_is_400(api, agent_calls, key, header):
    response = api.post(**{header: key})

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_idempotency_key"
    assert error["details"]["length"] == len(key)
    assert agent_calls == [] and Message.objects.count() == 0 and IdempotencyRecord.objects.count() == 0


@pytest.mark.parametrize("key", ["k" * 255, "a", " ", "~!@#$%^&*()_+{}|:<>? `-=[]\\;',./\""])
def test_printable_ascii_keys_of_1_to_255_characters_are_accepted(api, key):
    first = api.post(idempotency_key=key)
    replay = api.post(idempotency_key=key)

    assert first.status_code == 200
    assert (replay.status_code, replay.content, replay["Idempotent-Replayed"]) == (200, first.content, "true")
    assert IdempotencyRecord.objects.get().key == key


# --- refused requests do not burn the key ----------------------------------------------------------------


def _no_credits(api, workspace, channel):
    Workspace.objects.filter(pk=workspace.pk).update(credit_balance=0)
    return api.post(idempotency_key=KEY), lambda: credits_grant(workspace=workspace, amount=100)


def _wrong_channel(api, workspace, channel):
    return api.post(idempotency_key=KEY, channel_id="ch_doesnotexist"), lambda: None


def _inactive_channel(api, workspace, channel):
    Channel.objects.filter(pk=channel.pk).update(is_active=False)
    return api.post(idempotency_key=KEY), lambda: Channel.objects.filter(pk=channel.pk).update(is_active=True)


def _invalid_body(api, workspace, channel):
    return api.post({**SEED_TEXT, "content": {"text": {"body": ""}}}, idempotency_key=KEY), lambda: None


@pytest.mark.parametrize(
    ("refuse", "status", "code"),
    [
        (_no_credits, 402, "insufficient_credits"),
        (_wrong_channel, 404, "channel_not_found"),
        (_inactive_channel, 400, "channel_unavailable"),
        (_invalid_body, 400, "invalid_request"),
    ],
    ids=["402", "404", "400-channel", "400-body"],
)
def test_refused_request_does_not_burn_the_key(api, workspace, channel, agent_calls, refuse, status, code):
    # given: a request refused before anything is stored
    refused, correct = refuse(api, workspace, channel)
    assert refused.status_code == status and error_of(refused)["code"] == code
    assert IdempotencyRecord.objects.count() == 0 and Message.objects.count() == 0 and agent_calls == []

    # when: the cause is corrected and the (corrected) request sent again with the same key
    correct()
    retried = api.post(idempotency_key=KEY)

    # then: it runs as a first request, and is the one the key now replays
    assert retried.status_code == 200, retried.content
    assert "Idempotent-Replayed" not in retried
    assert len(agent_calls) == 1 and inbound_count() == 1 and charges() == [-1]
    assert api.post(idempotency_key=KEY).content == retried.content


# --- in progress, and a dead request's key ---------------------------------------------------------------


def test_same_key_while_the_first_is_in_flight_is_409_with_retry_after(api, channel, api_key, scripted_agent):
    # given: the agent, while answering the first request, sees a second request with the same key arrive
    seen = {}
    second = Api(Client(), channel, api_key)

    def agent_meanwhile(**kwargs):
        seen["same"] = second.post(idempotency_key=KEY)
        seen["different"] = second.post(OTHER_TEXT, idempotency_key=KEY)

    scripted_agent.take_over(channel.agent).script(agent_meanwhile)

    # when
    first = api.post(idempotency_key=KEY)

    # then: the first completes; the same request in the meantime was told to come back
    assert first.status_code == 200
    in_progress = seen["same"]
    assert in_progress.status_code == 409
    error = error_of(in_progress)
    assert error["code"] == "idempotency_in_progress"
    assert 1 <= int(in_progress["Retry-After"]) <= 5
    assert error["details"]["retryAfterSeconds"] == int(in_progress["Retry-After"])
    assert error_of(seen["different"])["code"] == "idempotency_key_reused"  # checked before the lock
    assert inbound_count() == 1 and charges() == [-1]
    # and it gets the first's response once that is done
    assert second.post(idempotency_key=KEY).content == first.content


class ProcessDied(BaseException):
    """Stands for the worker being killed mid-request: not an Exception, so no handler runs."""


def test_a_dead_requests_key_is_taken_over_after_its_lock_expires(api, workspace, channel, scripted_agent):
    # given: a first request that died while its agent was thinking
    scripted_agent.take_over(channel.agent).script(ProcessDied)
    calls = scripted_agent.calls
    with pytest.raises(ProcessDied):
        api.post(idempotency_key=KEY)
    stored = Message.objects.get()
    assert (stored.status, stored.credits_reserved) == ("PENDING", 1)
    assert IdempotencyRecord.objects.get().state == IdempotencyRecord.State.IN_PROGRESS

    # when: a retry comes while its lock still holds, and one after the lock expired
    early = api.post(idempotency_key=KEY)
    lease = timedelta(seconds=settings.PROCESSING_LEASE_SECONDS + 1)
    with time_machine.travel(timezone.now() + lease, tick=True):
        late = api.post(idempotency_key=KEY)
        replay = api.post(idempotency_key=KEY)

    # then: the early retry is refused, the late one answers the stored message; nothing is stored twice
    assert early.status_code == 409 and error_of(early)["code"] == "idempotency_in_progress"
    assert late.status_code == 200, late.content
    assert "Idempotent-Replayed" not in late
    assert late.json()["messageId"] == stored.pk
    assert inbound_count() == 1 and Message.objects.get(pk=stored.pk).status == "ANSWERED"
    assert len(calls) == 2 and charges() == [-1]
    assert_books_balance(workspace, balance=99)
    assert (replay.content, replay["Idempotent-Replayed"]) == (late.content, "true")


# --- retry after an agent failure ------------------------------------------------------------------------


@pytest.fixture
def slow_then_fast_llm(httpserver, monkeypatch):
    """An OpenAI-compatible server that answers its first call only after the agent gave up (0.5 s),
    and later calls at once. Yields the list of calls and the event that frees the stuck first call."""
    monkeypatch.setattr(openai_agent, "MAX_RETRIES", 0)
    release = threading.Event()
    calls = []

    def handler(request: Request) -> Response:
        calls.append(request.get_json())
        if len(calls) == 1:
            release.wait(timeout=5)  # bounded, and set by the test, so the server thread is never stuck
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "test-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Refunds take 5 days."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 30, "completion_tokens": 6, "total_tokens": 36},
        }
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(handler)
    try:
        yield calls, release
    finally:
        release.set()


def test_retry_after_504_runs_the_agent_again_on_the_stored_message(
    client, workspace, api_key, httpserver, slow_then_fast_llm
):
    # given: a channel whose agent is an OpenAI-compatible server that is too slow the first time
    calls, release = slow_then_fast_llm
    agent = AIAgentFactory(
        workspace=workspace,
        provider="openai",
        base_url=httpserver.url_for("/v1"),
        model="test-model",
        timeout_seconds=0.5,
    )
    api = Api(client, ChannelFactory(workspace=workspace, agent=agent), api_key)

    # when: the first attempt times out
    timed_out = api.post(idempotency_key=KEY)
    release.set()

    # then: 504, the message is kept, nothing is charged, the key is free again
    assert timed_out.status_code == 504 and error_of(timed_out)["code"] == "agent_timeout"
    stored = Message.objects.get()
    assert (stored.status, stored.error_code, stored.credits_reserved) == ("FAILED", "agent_timeout", 0)
    assert IdempotencyRecord.objects.get().state == IdempotencyRecord.State.RELEASED
    assert charges() == []
    assert_books_balance(workspace, balance=100)

    # when: the client retries with the same key
    retried = api.post(idempotency_key=KEY)

    # then: the agent runs again, on the message already stored
    assert retried.status_code == 200, retried.content
    assert "Idempotent-Replayed" not in retried
    body = retried.json()
    assert body["messageId"] == stored.pk
    assert body["aiMessages"][0]["content"] == {"text": {"body": "Refunds take 5 days."}, "type": "text"}
    assert len(calls) == 2
    assert calls[1]["messages"][-1] == calls[0]["messages"][-1]  # the same question, not a duplicate in history
    assert inbound_count() == 1 and Message.objects.get(pk=stored.pk).status == "ANSWERED"
    assert charges() == [-1]
    assert_books_balance(workspace, balance=99)
    replay = api.post(idempotency_key=KEY)
    assert (replay.content, replay["Idempotent-Replayed"]) == (retried.content, "true")
    assert len(calls) == 2


def test_retry_after_502_reserves_credits_again_and_runs_the_agent(api, workspace, channel, scripted_agent):
    from conversations.agents.errors import AgentUnavailable

    scripted_agent.take_over(channel.agent).script(
        AgentUnavailable("The AI agent could not answer.", details={"reason": "test"})
    )
    calls = scripted_agent.calls

    failed = api.post(idempotency_key=KEY)
    retried = api.post(idempotency_key=KEY)

    assert failed.status_code == 502 and error_of(failed)["code"] == "agent_unavailable"
    assert retried.status_code == 200 and retried.json()["messageId"] == Message.objects.get(direction="INBOUND").pk
    assert len(calls) == 2 and inbound_count() == 1 and charges() == [-1]
    assert_books_balance(workspace, balance=99)


# --- retention -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [SEED_TEXT, OTHER_TEXT], ids=["same-body", "other-body"])
def test_a_key_past_its_retention_is_forgotten(api, agent_calls, body):
    # given
    first = api.post(idempotency_key=KEY)
    retention = timedelta(seconds=settings.IDEMPOTENCY_RETENTION_SECONDS + 1)

    # when: the key comes again after its retention
    with time_machine.travel(timezone.now() + retention, tick=True):
        again = api.post(body, idempotency_key=KEY)

    # then: it is a new request: no replay, no 422
    assert again.status_code == 200, again.content
    assert "Idempotent-Replayed" not in again
    assert again.json()["messageId"] != first.json()["messageId"]
    assert len(agent_calls) == 2 and inbound_count() == 2
    record = IdempotencyRecord.objects.get()
    assert record.state == IdempotencyRecord.State.COMPLETED and bytes(record.response_body) == again.content


def test_a_key_within_its_retention_is_still_replayed(api):
    first = api.post(idempotency_key=KEY)
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.IDEMPOTENCY_RETENTION_SECONDS - 60)):
        replay = api.post(idempotency_key=KEY)
    assert (replay.content, replay["Idempotent-Replayed"]) == (first.content, "true")


def test_a_request_that_outlived_its_lock_does_not_record_over_the_one_that_took_over(
    api, channel, api_key, workspace, scripted_agent
):
    # given: a first request still waiting for its agent when its lock expires; a retry takes the key
    # over and completes meanwhile (a request can outlive the lease: turn wait + media + agent retries)
    retry = Api(Client(), channel, api_key)
    seen = {}
    lease = timedelta(seconds=settings.PROCESSING_LEASE_SECONDS + 1)

    def outlives_its_lock(**kwargs):
        with time_machine.travel(timezone.now() + lease, tick=True):
            seen["retry"] = retry.post(idempotency_key=KEY)

    scripted_agent.take_over(channel.agent).script(outlives_its_lock)
    calls = scripted_agent.calls

    # when: the first request's agent answers at last
    late = api.post(idempotency_key=KEY)

    # then: the retry's response is the key's; the late one records nothing and is told to fetch it
    taken_over = seen["retry"]
    assert taken_over.status_code == 200, taken_over.content
    assert late.status_code == 409 and error_of(late)["code"] == "idempotency_in_progress", late.content
    assert len(calls) == 2
    inbound = Message.objects.get(direction="INBOUND")
    assert (inbound.pk, inbound.status) == (taken_over.json()["messageId"], "ANSWERED")
    assert Message.objects.filter(direction="OUTBOUND").count() == len(taken_over.json()["aiMessages"])
    assert charges() == [-1]
    assert_books_balance(workspace, balance=99)
    replay = api.post(idempotency_key=KEY)
    assert (replay.content, replay["Idempotent-Replayed"]) == (taken_over.content, "true")


def test_retry_after_504_refused_for_credits_keeps_the_key_and_the_message_for_a_later_retry(
    api, workspace, channel, scripted_agent
):
    # given: a message stored by an attempt that timed out
    from conversations.agents.errors import AgentTimeout

    scripted_agent.take_over(channel.agent).script(
        AgentTimeout("The AI agent did not answer in time.", details={"timeoutSeconds": 60})
    )
    calls = scripted_agent.calls
    assert api.post(idempotency_key=KEY).status_code == 504
    stored = Message.objects.get()

    # when: the retry finds no credits, then credits are added and it is retried again
    Workspace.objects.filter(pk=workspace.pk).update(credit_balance=0)
    refused = api.post(idempotency_key=KEY)
    credits_grant(workspace=workspace, amount=5)
    retried = api.post(idempotency_key=KEY)

    # then
    assert refused.status_code == 402 and error_of(refused)["code"] == "insufficient_credits"
    assert retried.status_code == 200 and retried.json()["messageId"] == stored.pk
    assert len(calls) == 2 and inbound_count() == 1
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (4, 0)
    assert UsageLedgerEntry.objects.filter(kind="CHARGE").count() == 1
