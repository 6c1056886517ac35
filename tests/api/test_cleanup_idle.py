"""The clean-up's inactivity close: active conversations idle past their channel's timeout are closed
(reason inactivity) in bounded batches, each close announced as `conversation.closed` in its batch."""

import io
import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from api.maintenance.cleanup import cleanup_run, idle_conversations_close
from contacts.services import contact_create
from conversations.models import Conversation
from tests.factories import ChannelFactory, WorkspaceFactory
from webhooks.models import WebhookEvent
from webhooks.services import webhook_set

_numbers = itertools.count()
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def workspace(db):
    return WorkspaceFactory()


def conversations(channel, count: int, *, idle: timedelta, status: str = "ACTIVE") -> list[Conversation]:
    made = []
    for _ in range(count):
        contact = contact_create(
            workspace_id=channel.workspace_id,
            identifier=f"c{next(_numbers)}@x.test",
            name="",
        )
        made.append(
            Conversation.objects.create(
                workspace_id=channel.workspace_id,
                channel=channel,
                contact=contact,
                agent=channel.agent,
                status=status,
                last_seq=1,
                last_message_at=NOW - idle,
            )
        )
    return made


def test_idle_conversations_are_closed_in_batches_and_each_is_announced(workspace, settings):
    # given: a channel with the default timeout (a day) and a webhook, and one with an hour
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    daily = ChannelFactory(workspace=workspace)
    hourly = ChannelFactory(workspace=workspace, inactivity_timeout_seconds=3600)
    webhook_set(channel_id=daily.pk, url="http://127.0.0.1:9/hook")
    idle_daily = conversations(daily, 5, idle=timedelta(days=1, seconds=1))
    fresh_daily = conversations(daily, 2, idle=timedelta(hours=23))
    idle_hourly = conversations(hourly, 2, idle=timedelta(hours=1, seconds=1))
    fresh_hourly = conversations(hourly, 1, idle=timedelta(minutes=59))
    already = conversations(daily, 1, idle=timedelta(days=9), status="CLOSED")

    # when: batches of two
    with CaptureQueriesContext(connection) as queries:
        closed = idle_conversations_close(now=NOW, batch_size=2)

    # then: exactly the idle ones, for inactivity, at NOW
    assert closed == 7
    by_status = dict(Conversation.objects.values_list("pk", "status"))
    assert {c.pk for c in idle_daily + idle_hourly} == {pk for pk, s in by_status.items() if s == "CLOSED"} - {
        already[0].pk
    }
    assert all(by_status[c.pk] == "ACTIVE" for c in fresh_daily + fresh_hourly)
    for conversation in Conversation.objects.filter(pk__in=[c.pk for c in idle_daily + idle_hourly]):
        assert (conversation.close_reason, conversation.closed_at) == ("inactivity", NOW)
    assert Conversation.objects.get(pk=already[0].pk).close_reason == ""

    # and in bounded batches: one UPDATE per batch, at most two ids each (the hourly channel's 2, then an
    # empty look; the daily one's 2 + 2 + 1)
    closes = [q["sql"] for q in queries.captured_queries if "SET status = " in q["sql"]]
    assert [sql.split(" IN (")[1].split(")")[0].count(",") + 1 for sql in closes] == [2, 2, 2, 1]

    # and the daily channel's webhook got one event per close, with the conversation object
    events = [json.loads(p) for p in WebhookEvent.objects.values_list("payload", flat=True)]
    assert sorted(e["data"]["conversation"]["id"] for e in events) == sorted(c.pk for c in idle_daily)
    for event in events:
        assert event["type"] == "conversation.closed"
        assert event["data"]["conversation"]["status"] == "CLOSED"
        assert event["data"]["conversation"]["closeReason"] == "inactivity"
        assert event["data"]["conversation"]["closedAt"] == "2026-11-25T12:00:00.000Z"
        assert event["data"]["conversation"]["aiAgentId"] == daily.agent_id


def test_a_channel_with_timeout_zero_is_never_closed(workspace):
    never = ChannelFactory(workspace=workspace, inactivity_timeout_seconds=0)
    (idle,) = conversations(never, 1, idle=timedelta(days=3650))

    assert idle_conversations_close(now=NOW) == 0
    assert Conversation.objects.get(pk=idle.pk).status == "ACTIVE"


def test_a_second_run_finds_nothing_more(workspace):
    channel = ChannelFactory(workspace=workspace)
    conversations(channel, 3, idle=timedelta(days=2))

    assert idle_conversations_close(now=NOW, batch_size=3) == 3
    assert idle_conversations_close(now=NOW, batch_size=3) == 0


def test_the_clean_up_and_the_command_close_idle_conversations(workspace):
    channel = ChannelFactory(workspace=workspace)
    conversations(channel, 2, idle=timedelta(days=400))
    out = io.StringIO()

    assert cleanup_run(now=NOW).idle_conversations == 2
    conversations(channel, 1, idle=timedelta(days=400))
    call_command("cleanup", stdout=out)

    assert "Idle conversations closed: 1\n" in out.getvalue()
    assert not Conversation.objects.filter(status="ACTIVE").exists()
