"""A database connection that dies inside or between the phases' statements (api/flow/writes.py, PostgreSQL): the
request's backend is terminated while its statement waits for a row this test holds (or, between the
phases, every idle pooled connection is). The request is answered 503 `database_unavailable` with nothing
half-written, the failure path runs on a fresh connection, and a retry with the same key answers once."""

import time

import pytest
from django.db import connection, transaction
from django.test import Client

from api.models import IdempotencyRecord
from channels_app.models import Workspace
from conversations.models import Conversation, Message
from tests.concurrency.conftest import (
    THREAD_TIMEOUT_SECONDS,
    agent_thinks_until_told,
    books,
    in_thread,
    lock_waiters,
    wait_for_lock_waiters,
)
from tests.config.test_database_outage import terminate_backends
from tests.conftest import SEED_TEXT, Api, error_of

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "terminated-%s-key"
SECOND = {**SEED_TEXT, "content": {"text": {"body": "Can I get a refund?"}}}


def terminate(pid: int) -> None:
    """Terminate the test database's backend `pid` (it waits for a row this test holds); return once it ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    deadline = time.monotonic() + THREAD_TIMEOUT_SECONDS
    while pid in lock_waiters():
        assert time.monotonic() < deadline, "the terminated backend did not end"
        time.sleep(0.02)


@pytest.mark.parametrize("phase", ["accept", "record: settlement", "record: answered"])
def test_a_backend_terminated_inside_a_phase_is_503_and_the_retry_with_the_key_answers_once(
    race_channel_factory, scripted_agent, phase
):
    # given: a contact with one answered message, and its next message with an idempotency key, whose
    # statement of `phase` waits for a row this test holds: the workspace (the accept's reservation), the
    # conversation (the record's first statement) or the inbound message (the record's second)
    channel, key = race_channel_factory(credits=100)
    first = Api(Client(), channel, key).post().json()
    thinking, go = agent_thinks_until_told(scripted_agent)
    results: dict = {}
    with transaction.atomic():
        if phase == "accept":
            Workspace.objects.select_for_update().get(pk=channel.workspace_id)
        poster = in_thread(results, "post", lambda: Api(Client(), channel, key).post(SECOND, idempotency_key=KEY))
        if phase != "accept":
            assert thinking.wait(THREAD_TIMEOUT_SECONDS)
            if phase == "record: settlement":
                Conversation.objects.select_for_update(no_key=True).get(pk=first["conversationId"])
            else:
                Message.objects.select_for_update(no_key=True).get(direction="INBOUND", seq=2)
            go.set()
        (pid,) = wait_for_lock_waiters(1)

        # when: its backend is terminated (a restart, a failover, an operator's pg_terminate_backend)
        terminate(pid)
    poster.join(THREAD_TIMEOUT_SECONDS)
    assert not poster.is_alive()

    # then: 503 to retry, and nothing half-written: no trace of the message (accept), or the message kept as
    # failed with its key released and its reservation returned, no reply, no charge (record)
    response = results["post"]
    assert error_of(response, status=503)["code"] == "database_unavailable"
    assert response["Retry-After"] == "2"
    inbound = Message.objects.filter(direction="INBOUND").order_by("seq")
    assert Message.objects.filter(direction="OUTBOUND").count() == 1
    assert books(channel.workspace) == (99, 0, 99)
    if phase == "accept":
        assert inbound.count() == 1 and not IdempotencyRecord.objects.exists()
        assert Conversation.objects.get().last_seq == 1
    else:
        stored = inbound.get(seq=2)
        assert (stored.status, stored.error_code, stored.credits_reserved) == ("FAILED", "database_unavailable", 0)
        record = IdempotencyRecord.objects.get()
        assert (record.state, record.message_id) == ("RELEASED", stored.pk)

    # and the retry with the key answers the message once; its replay is the same bytes
    go.set()
    retry = Api(Client(), channel, key).post(SECOND, idempotency_key=KEY)
    assert retry.status_code == 200, retry.content
    assert [m.status for m in inbound] == ["ANSWERED", "ANSWERED"]
    assert retry.json()["messageId"] == inbound[1].pk
    assert Message.objects.filter(direction="OUTBOUND", reply_to=inbound[1]).count() == 1
    assert books(channel.workspace) == (98, 0, 98)
    replay = Api(Client(), channel, key).post(SECOND, idempotency_key=KEY)
    assert (replay.content, replay["Idempotent-Replayed"]) == (retry.content, "true")


def test_connections_that_die_in_the_pool_while_the_agent_thinks_fail_no_record_phase(
    race_channel_factory, scripted_agent
):
    # given: a request whose agent is thinking (its connection is back in the pool)
    channel, key = race_channel_factory(credits=100)
    thinking, go = agent_thinks_until_told(scripted_agent)
    results: dict = {}
    poster = in_thread(results, "post", lambda: Api(Client(), channel, key).post(idempotency_key=KEY))
    assert thinking.wait(THREAD_TIMEOUT_SECONDS)

    # when: every other backend of the test database is terminated, the pool's idle connections with them
    assert terminate_backends() >= 1
    go.set()
    poster.join(THREAD_TIMEOUT_SECONDS)

    # then: the record phase took a fresh connection and answered
    assert results["post"].status_code == 200, results["post"].content
    assert Message.objects.get(direction="INBOUND").status == "ANSWERED"
    assert IdempotencyRecord.objects.get().state == "COMPLETED"
    assert books(channel.workspace) == (99, 0, 99)
