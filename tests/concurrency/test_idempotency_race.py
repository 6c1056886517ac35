"""Requests with one idempotency key at once (PostgreSQL): one message, one agent call, one charge.

First posts racing on a new key; retries racing to take over a released (after a 5xx) or expired key; a
request that outlived its lock against the retry that took it over.
"""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from api.models import IdempotencyRecord
from billing.models import UsageLedgerEntry
from conversations.agents.errors import AgentTimeout
from conversations.models import Message
from tests.concurrency.conftest import run_together
from tests.conftest import Api

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "race-6f1c2a0e-5d0b-4c61-9a57-2f0e3f1d9b11"
REQUESTS = 50


def test_fifty_posts_with_one_key_make_one_message_one_agent_call_one_charge(race_channel_factory, scripted_agent):
    # given: an agent slow enough (0.2 s) that the requests overlap while it thinks
    channel, key = race_channel_factory(credits=100)
    scripted_agent.delay = 0.2

    # when: fifty identical posts with one key start together
    responses = run_together(REQUESTS, lambda index, api: api.post(idempotency_key=KEY), channel=channel, key=key)

    # then: exactly one ran; every other one is the byte-identical replay or was told it is in progress
    firsts = [r for r in responses if r.status_code == 200 and "Idempotent-Replayed" not in r]
    assert len(firsts) == 1, [r.status_code for r in responses]
    first = firsts[0]
    others = [r for r in responses if r is not first]
    replays = [r for r in others if r.status_code == 200]
    in_progress = [r for r in others if r.status_code == 409]
    assert len(replays) + len(in_progress) == REQUESTS - 1, sorted({r.status_code for r in others})
    assert all(r["Idempotent-Replayed"] == "true" and r.content == first.content for r in replays)
    assert all(
        r.json()["error"]["code"] == "idempotency_in_progress" and int(r["Retry-After"]) >= 1 for r in in_progress
    )
    assert in_progress, "the requests did not overlap: the test proved nothing about the in-progress case"

    # and the database holds one of everything
    assert scripted_agent.count == 1
    inbound = Message.objects.get(direction=Message.Direction.INBOUND)
    assert (inbound.pk, inbound.status) == (first.json()["messageId"], "ANSWERED")
    record = IdempotencyRecord.objects.get()
    assert (record.state, bytes(record.response_body), record.message_id) == ("COMPLETED", first.content, inbound.pk)
    charges = UsageLedgerEntry.objects.filter(kind=UsageLedgerEntry.Kind.CHARGE)
    assert list(charges.values_list("delta", "message_id")) == [(-1, inbound.pk)]
    workspace = channel.workspace
    workspace.refresh_from_db()
    ledger = sum(UsageLedgerEntry.objects.filter(workspace=workspace).values_list("delta", flat=True))
    assert (workspace.credit_balance, workspace.credit_reserved, ledger) == (99, 0, 99)


def test_a_request_that_outlived_its_lock_records_nothing_while_the_retry_that_took_over_completes(
    race_channel_factory, scripted_agent
):
    # given: a first request whose agent is still thinking when its lock expires, and a retry that takes
    # the key over and is itself thinking when the first one's agent answers
    channel, key = race_channel_factory(credits=100)
    first_thinking, first_answers = threading.Event(), threading.Event()
    retry_thinking, retry_answers = threading.Event(), threading.Event()

    def thinks_until(thinking: threading.Event, answers: threading.Event):
        def step(**kwargs):
            thinking.set()
            answers.wait(timeout=10)

        return step

    scripted_agent.script(thinks_until(first_thinking, first_answers), thinks_until(retry_thinking, retry_answers))
    responses = {}

    def post(name: str) -> None:
        try:
            responses[name] = Api(Client(), channel, key).post(idempotency_key=KEY)
        finally:
            connection.close()

    first = threading.Thread(target=post, args=("first",))
    first.start()
    assert first_thinking.wait(timeout=10)
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.PROCESSING_LEASE_SECONDS + 1), tick=True):
        retry = threading.Thread(target=post, args=("retry",))
        retry.start()
        assert retry_thinking.wait(timeout=10)

        # when: the first one's agent answers before the retry's does
        first_answers.set()
        first.join(timeout=10)
        retry_answers.set()
        retry.join(timeout=10)

    # then: the key, the message and its reservation are the retry's; the late first one stored nothing
    assert not first.is_alive() and not retry.is_alive()
    assert responses["first"].status_code == 409, responses["first"].content
    assert responses["first"].json()["error"]["code"] == "idempotency_in_progress"
    assert responses["retry"].status_code == 200, responses["retry"].content
    inbound = Message.objects.get(direction=Message.Direction.INBOUND)
    assert (inbound.pk, inbound.status) == (responses["retry"].json()["messageId"], "ANSWERED")
    assert Message.objects.filter(direction=Message.Direction.OUTBOUND).count() == 1
    assert list(UsageLedgerEntry.objects.filter(kind="CHARGE").values_list("delta", flat=True)) == [-1]
    workspace = channel.workspace
    workspace.refresh_from_db()
    ledger = sum(UsageLedgerEntry.objects.filter(workspace=workspace).values_list("delta", flat=True))
    assert (workspace.credit_balance, workspace.credit_reserved, ledger) == (99, 0, 99)
    replay = Api(Client(), channel, key).post(idempotency_key=KEY)
    assert (replay.status_code, replay.content, replay["Idempotent-Replayed"]) == (
        200,
        responses["retry"].content,
        "true",
    )


class ProcessDied(BaseException):
    """Stands for the worker being killed mid-request: not an Exception, so no handler runs."""


@pytest.mark.parametrize(
    ("first_attempt", "later"),
    [
        (AgentTimeout("The AI agent did not answer in time.", details={"timeoutSeconds": 60}), timedelta(0)),
        (ProcessDied(), timedelta(seconds=settings.PROCESSING_LEASE_SECONDS + 1)),
    ],
    ids=["after-504", "after-lock-expiry"],
)
def test_concurrent_retries_of_a_failed_or_dead_request_run_the_agent_once(
    race_channel_factory, scripted_agent, first_attempt, later
):
    # given: a first attempt that stored the message and then timed out (504), or died holding the key
    channel, key = race_channel_factory(credits=100)
    scripted_agent.script(first_attempt)
    try:
        failed = Api(Client(), channel, key).post(idempotency_key=KEY)
        assert failed.status_code == 504
    except ProcessDied:
        pass
    stored = Message.objects.get()
    scripted_agent.delay = 0.2

    # when: twenty retries with the key start together (after the dead one's lock expired)
    with time_machine.travel(timezone.now() + later, tick=True):
        responses = run_together(20, lambda index, api: api.post(idempotency_key=KEY), channel=channel, key=key)

    # then: one of them answered the stored message; the others replayed it or were told to wait
    fresh = [r for r in responses if r.status_code == 200 and "Idempotent-Replayed" not in r]
    assert len(fresh) == 1, [r.status_code for r in responses]
    assert fresh[0].json()["messageId"] == stored.pk
    assert all(r.status_code == 409 or r.content == fresh[0].content for r in responses)
    assert scripted_agent.count == 2  # the first attempt, then one of the twenty retries
    assert Message.objects.filter(direction=Message.Direction.INBOUND).count() == 1
    assert list(UsageLedgerEntry.objects.filter(kind="CHARGE").values_list("message_id", flat=True)) == [stored.pk]
    workspace = channel.workspace
    workspace.refresh_from_db()
    ledger = sum(UsageLedgerEntry.objects.filter(workspace=workspace).values_list("delta", flat=True))
    assert (workspace.credit_balance, workspace.credit_reserved, ledger) == (99, 0, 99)
