"""The clean-up of abandoned messages and a late record phase of one of them, at once, on two connections:
both lock the message row before the workspace row (docs/architecture.md, "Row locks"), so the second waits
for the first instead of holding what the first needs (a deadlock PostgreSQL would break by failing one)."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from api.maintenance.cleanup import abandoned_margin_seconds, abandoned_messages_release
from channels_app.models import Workspace
from conversations.models import Message
from tests.concurrency.conftest import (
    THREAD_TIMEOUT_SECONDS,
    agent_thinks_until_told,
    books,
    in_thread,
    lock_waiters,
    wait_for_lock_waiters,
)
from tests.conftest import SEED_TEXT, Api

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_late_record_phase_and_the_clean_up_of_its_message_take_their_locks_in_one_order(
    race_channel_factory, scripted_agent
):
    # given: a request whose agent is still thinking, past its lease and the clean-up's margin (its process
    # stalled), so the clean-up takes it for dead
    channel, key = race_channel_factory(credits=10)
    thinking, go = agent_thinks_until_told(scripted_agent)
    results: dict = {}
    poster = in_thread(results, "post", lambda: Api(Client(), channel, key).post(SEED_TEXT))
    assert thinking.wait(THREAD_TIMEOUT_SECONDS)
    (inbound,) = Message.objects.filter(conversation__channel=channel, direction=Message.Direction.INBOUND)
    stale = timezone.now() - timedelta(seconds=abandoned_margin_seconds() + 60)
    Message.objects.filter(pk=inbound.pk).update(lease_until=stale)

    # when: the workspace row is held (a grant, say) while the record phase runs and then the clean-up starts
    with transaction.atomic():
        Workspace.objects.select_for_update(no_key=True).get(pk=channel.workspace_id)
        go.set()
        (recorder,) = wait_for_lock_waiters(1)  # the record phase, at the workspace row
        cleaner = in_thread(results, "cleanup", lambda: abandoned_messages_release(now=timezone.now()))
        waiting = wait_for_lock_waiters(2)  # the clean-up, at the message row the record phase holds
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT l.relation::regclass::text FROM pg_locks l WHERE l.pid = %s AND NOT l.granted",
                [next(pid for pid in waiting if pid != recorder)],
            )
            blocked_on = {row[0] for row in cursor.fetchall()}
    poster.join(THREAD_TIMEOUT_SECONDS)
    cleaner.join(THREAD_TIMEOUT_SECONDS)
    assert not poster.is_alive() and not cleaner.is_alive()

    # then: the clean-up waited for the message's row (or its tuple), not the workspace's, and neither failed:
    # the message was answered and charged, and the clean-up found it no longer abandoned
    assert Workspace._meta.db_table not in blocked_on
    assert results["post"].status_code == 200, results["post"].content
    assert results["cleanup"] == (0, 0)
    inbound.refresh_from_db()
    assert (inbound.status, inbound.credits_reserved) == (Message.Status.ANSWERED, 0)
    balance, reserved, ledger = books(channel.workspace)
    assert reserved == 0 and balance == ledger == 10 - results["post"].json()["usage"]["credits"]
    assert lock_waiters() == []
