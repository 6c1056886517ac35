"""The daily rollup (analytics.stats): fed by the record and failure paths and the clean-up, rebuilt from the
messages by `manage.py stats rebuild`."""

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import F, Sum
from django.utils import timezone

from analytics.models import LATENCY_BUCKETS_MS, LATENCY_FIELDS, MessageDay
from analytics.stats import latency_bucket, message_stats_failed
from api.maintenance.cleanup import ABANDONED_MARGIN_SECONDS, abandoned_messages_release
from billing.models import UsageLedgerEntry
from channels_app.models import Workspace
from conversations.models import Message
from tests.backoffice.seed import message_stats_answered, seed_days
from tests.conftest import SEED_TEXT


def rows(**filters) -> list[dict[str, Any]]:
    fields = ("day", "workspace_id", "channel_id", "error_code", "messages", "replies", "credits", "input_tokens")
    return [dict(row) for row in MessageDay.objects.filter(**filters).order_by("day", "error_code").values(*fields)]


def latency_samples(**filters) -> int:
    totals = MessageDay.objects.filter(**filters).aggregate(**{name: Sum(name) for name in LATENCY_FIELDS})
    return sum(value or 0 for value in totals.values())


def test_an_answered_message_is_counted_with_its_credits_replies_and_latency(api, channel):
    # when
    response = api.post()

    # then: one row for today's answers on the channel, the ledger's charge in it
    assert response.status_code == 200
    today = timezone.now().astimezone(UTC).date()
    charge = UsageLedgerEntry.objects.get(kind="CHARGE")
    assert rows() == [
        {
            "day": today,
            "workspace_id": channel.workspace_id,
            "channel_id": channel.pk,
            "error_code": "",
            "messages": 1,
            "replies": len(response.json()["aiMessages"]),
            "credits": -charge.delta,
            "input_tokens": charge.input_tokens,
        }
    ]
    assert latency_samples() == 1

    # and a second message adds to the same row
    api.post({**SEED_TEXT, "content": {"text": {"body": "Can I get a refund?"}}})
    assert MessageDay.objects.get().messages == 2 and latency_samples() == 2


def test_a_media_failure_is_counted_under_its_code_and_charges_nothing(api, channel):
    image = {
        "type": "IMAGE",
        "contactIdentifier": "a@example.com",
        "content": {"image": {"url": "http://10.0.0.7/x.png"}},
    }

    assert api.post(image).status_code == 400

    assert [(row["error_code"], row["messages"], row["credits"]) for row in rows()] == [("media_url_not_allowed", 1, 0)]
    assert latency_samples() == 0


def test_failures_count_only_the_messages_that_transaction_failed(api, channel):
    # given: an answered message
    message_id = api.post().json()["messageId"]
    answered_before = MessageDay.objects.get(error_code="").messages

    # when: a late failure path runs for it (the message is ANSWERED, not FAILED with this code)
    message_stats_failed(message_ids=[message_id], error_code="agent_timeout", at=timezone.now())

    # then: nothing is counted as failed
    assert not MessageDay.objects.exclude(error_code="").exists()
    assert MessageDay.objects.get(error_code="").messages == answered_before


def test_abandoned_messages_are_counted_by_the_clean_up_on_its_day(api, channel):
    # given: two messages whose requests died (PENDING, a credit each, leases long gone)
    api.post()
    message = Message.objects.get(direction="INBOUND")
    long_ago = timezone.now() - timedelta(seconds=ABANDONED_MARGIN_SECONDS * 3)
    for seq in (2, 3):
        Message.objects.create(
            conversation=message.conversation,
            seq=seq,
            direction="INBOUND",
            type="TEXT",
            content={"text": {"body": "hello?"}},
            status="PENDING",
            lease_until=long_ago,
            credits_reserved=1,
        )
    Workspace.objects.filter(pk=channel.workspace_id).update(credit_reserved=F("credit_reserved") + 2)
    tomorrow = timezone.now() + timedelta(days=1)

    # when: the clean-up runs (in batches of one: two transactions on the same row)
    assert abandoned_messages_release(now=tomorrow, batch_size=1) == (2, 2)

    # then: counted on the clean-up's day, under "abandoned"
    abandoned = MessageDay.objects.get(error_code="abandoned")
    assert (abandoned.day, abandoned.messages, abandoned.channel_id) == (tomorrow.date(), 2, channel.pk)


def test_the_upsert_adds_every_column(channel):
    at = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)
    for seconds in (0.004, 0.3, 0.3, 75.0):
        message_stats_answered(
            workspace_id=channel.workspace_id,
            channel_id=channel.pk,
            at=at,
            replies=2,
            credits=3,
            input_tokens=10,
            output_tokens=5,
            agent_seconds=seconds,
        )
    row = MessageDay.objects.get()
    assert (row.day, row.messages, row.replies, row.credits, row.input_tokens, row.output_tokens) == (
        at.date(),
        4,
        8,
        12,
        40,
        20,
    )
    assert row.agent_ms == 4 + 300 + 300 + 75_000
    # 4 ms in the first bucket, 300 ms in the bucket whose bound is 300 (inclusive), 75 s in the open last one
    assert (row.lat_00, getattr(row, LATENCY_FIELDS[LATENCY_BUCKETS_MS.index(300)]), row.lat_19) == (1, 2, 1)


def test_latency_buckets_have_inclusive_upper_bounds():
    assert latency_bucket(0) == 0
    assert latency_bucket(10) == 0
    assert latency_bucket(11) == 1
    assert latency_bucket(60_000) == len(LATENCY_BUCKETS_MS) - 1
    assert latency_bucket(60_001) == len(LATENCY_BUCKETS_MS)


def test_rebuild_recomputes_past_days_from_the_messages(db, client, httpserver):
    # given: four days of real traffic, counted live
    today = timezone.now().date()
    seeded = seed_days(client=client, httpserver=httpserver, today=today, days=4)
    key = ("workspace_id", "day", "channel_id", "error_code", "messages", "replies", "credits", "input_tokens")
    live = sorted(MessageDay.objects.values_list(*key))
    assert live, "the seed fed the rollup"

    # when: the rollup is lost and rebuilt for the seeded days
    MessageDay.objects.all().delete()
    out = io.StringIO()
    call_command("stats", "rebuild", "--from", str(seeded.days[0]), "--to", str(today), stdout=out)

    # then: the same counts, credits and tokens, day by day (latency is estimated from the message times)
    assert sorted(MessageDay.objects.values_list(*key)) == live
    assert latency_samples() == MessageDay.objects.filter(error_code="").aggregate(n=Sum("messages"))["n"]
    assert f"{len(live)} rows" in out.getvalue()


def test_rebuild_refuses_a_bad_range(db):
    with pytest.raises(Exception, match="2026-11-25"):
        call_command("stats", "rebuild", "--from", "yesterday")
