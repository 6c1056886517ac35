"""The periodic clean-up: the service, `manage.py cleanup`, the eager task, and a real Celery worker on Redis."""

import hashlib
import io
import json
import time
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from api.maintenance.cleanup import (
    ABANDONED_MARGIN_SECONDS,
    abandoned_messages_release,
    cleanup_run,
    idempotency_records_purge,
)
from api.models import IdempotencyRecord
from api.tasks import cleanup_task
from channels_app.models import Workspace
from config import celery_app
from contacts.services import contact_create
from conversations.media.cache import media_assets_purge, media_file_name
from conversations.models import Conversation, MediaAsset, Message
from tests.conftest import requires_redis
from tests.factories import ChannelFactory, WorkspaceFactory
from webhooks.models import WebhookEvent
from webhooks.services import webhook_set

HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def record(workspace, key: str, *, expires_at) -> IdempotencyRecord:
    return IdempotencyRecord.objects.create(
        workspace=workspace, key=key, fingerprint="f" * 64, expires_at=expires_at, state="COMPLETED"
    )


def asset(workspace, data: bytes, *, expires_at, url: str = "https://cdn.example.com/file.png") -> MediaAsset:
    sha256 = hashlib.sha256(data).hexdigest()
    name = media_file_name(sha256=sha256, mime_type="image/png")
    if not default_storage.exists(name):
        default_storage.save(name, ContentFile(data))
    return MediaAsset.objects.create(
        workspace=workspace,
        url=url,
        url_sha256="u" * 64,
        sha256=sha256,
        file=name,
        mime_type="image/png",
        size=len(data),
        expires_at=expires_at,
    )


def conversation_of(workspace) -> Conversation:
    channel = ChannelFactory.create(workspace=workspace)
    contact = contact_create(workspace_id=workspace.pk, identifier=f"c-{channel.pk}@example.com", name="")
    return Conversation.objects.create(workspace=workspace, channel=channel, contact=contact, agent=channel.agent)


def inbound(conversation, seq: int, *, status="PENDING", lease_until=None, credits_reserved=0, **fields) -> Message:
    message = Message.objects.create(
        conversation=conversation,
        seq=seq,
        direction="INBOUND",
        type="TEXT",
        content={"text": {"body": "hi"}},
        status=status,
        lease_until=lease_until,
        credits_reserved=credits_reserved,
        **fields,
    )
    if credits_reserved:
        Workspace.objects.filter(pk=conversation.workspace_id).update(
            credit_reserved=F("credit_reserved") + credits_reserved
        )
    return message


@pytest.fixture
def rich_workspace(db):
    return WorkspaceFactory(credit_balance=100)


# --- idempotency records -------------------------------------------------------------------------------


def test_expired_idempotency_records_are_deleted_in_batches_and_live_ones_kept(rich_workspace):
    # given
    now = timezone.now()
    expired = [record(rich_workspace, f"old-{n}", expires_at=now - HOUR) for n in range(5)]
    live = record(rich_workspace, "live", expires_at=now + HOUR)

    # when
    deleted = idempotency_records_purge(now=now, batch_size=2)

    # then
    assert deleted == len(expired)
    assert list(IdempotencyRecord.objects.values_list("pk", flat=True)) == [live.pk]


# --- media ------------------------------------------------------------------------------------------------


def test_expired_media_rows_and_files_are_deleted_and_a_shared_file_stays(rich_workspace):
    # given: a file only expired assets name, and one an expired and a live asset share
    now = timezone.now()
    alone = asset(rich_workspace, b"\x89PNG only expired", expires_at=now - HOUR)
    alone_twice = asset(rich_workspace, b"\x89PNG only expired", expires_at=now - 2 * HOUR, url="https://b/x")
    shared_expired = asset(rich_workspace, b"\x89PNG shared", expires_at=now - HOUR)
    shared_live = asset(rich_workspace, b"\x89PNG shared", expires_at=now + HOUR, url="https://c/x")
    # expired a minute ago: a request that found it just before may still be linking its message to it
    just_expired = asset(rich_workspace, b"\x89PNG recent", expires_at=now - timedelta(seconds=60))
    conversation = conversation_of(rich_workspace)
    linked = inbound(
        conversation, 1, status="ANSWERED", media_asset=alone, media_mime_type="image/png", media_size=alone.size
    )

    # when
    purged = media_assets_purge(now=now, batch_size=1)

    # then
    assert (purged.assets, purged.files) == (3, 1)
    assert set(MediaAsset.objects.values_list("pk", flat=True)) == {shared_live.pk, just_expired.pk}
    assert default_storage.exists(just_expired.file.name)
    assert not default_storage.exists(alone.file.name)
    assert alone_twice.file.name == alone.file.name
    assert default_storage.exists(shared_live.file.name) and shared_expired.file.name == shared_live.file.name
    linked.refresh_from_db()
    assert (linked.media_asset, linked.media_mime_type, linked.media_size) == (None, "image/png", alone.size)


# --- abandoned reservations ---------------------------------------------------------------------------------


def test_an_abandoned_message_is_announced_to_its_channels_webhook_as_message_failed(rich_workspace, settings):
    # given: a message whose request died long ago, on a channel with a webhook
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    conversation = conversation_of(rich_workspace)
    webhook_set(channel_id=conversation.channel_id, url="http://127.0.0.1:9/hook")
    lost = inbound(conversation, 1, lease_until=timezone.now() - timedelta(days=1), credits_reserved=2)

    # when
    abandoned_messages_release(now=timezone.now())

    # then: the failure is announced, once, as any other failure is
    event = WebhookEvent.objects.get(type="message.failed")
    data = json.loads(event.payload)["data"]
    assert data["error"]["code"] == "abandoned"
    assert (data["messageId"], data["conversationId"], data["contactId"]) == (
        lost.pk,
        conversation.pk,
        conversation.contact_id,
    )
    assert event.deliveries.count() == 1
    abandoned_messages_release(now=timezone.now())
    assert WebhookEvent.objects.filter(type="message.failed").count() == 1


def test_a_message_is_not_abandoned_before_the_broker_could_hand_its_killed_task_to_another_worker(
    rich_workspace, settings
):
    # given: the broker redelivers a killed worker's task after 900 s (looking every 10 s)
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 900, "unacked_restore_interval": 10}
    now = timezone.now()
    conversation = conversation_of(rich_workspace)
    redelivered_soon = inbound(conversation, 1, lease_until=now - timedelta(seconds=800), credits_reserved=1)
    long_gone = inbound(conversation, 2, lease_until=now - timedelta(seconds=1000), credits_reserved=1)

    # when
    abandoned_messages_release(now=now)

    # then: the one whose task may still come back is left to it
    redelivered_soon.refresh_from_db()
    long_gone.refresh_from_db()
    assert (redelivered_soon.status, long_gone.status) == ("PENDING", "FAILED")


def test_the_system_check_warns_of_a_visibility_timeout_shorter_than_a_task_may_run(settings):
    from config.checks import broker_redelivery_check

    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 900}
    assert broker_redelivery_check(None) == []
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 200}
    (warning,) = broker_redelivery_check(None)
    assert warning.id == "channels.W002"


def test_abandoned_reservations_are_released_and_live_ones_kept(rich_workspace):
    # given
    now = timezone.now()
    conversation = conversation_of(rich_workspace)
    long_dead = now - timedelta(seconds=ABANDONED_MARGIN_SECONDS) - HOUR
    abandoned = [inbound(conversation, seq, lease_until=long_dead, credits_reserved=3) for seq in (1, 2, 3)]
    recently_dead = inbound(conversation, 4, lease_until=now - timedelta(seconds=30), credits_reserved=2)
    in_flight = inbound(conversation, 5, lease_until=now + HOUR, credits_reserved=1)
    answered = inbound(conversation, 6, status="ANSWERED", lease_until=long_dead)

    # when
    released = abandoned_messages_release(now=now, batch_size=2)

    # then
    assert released == (3, 9)
    for message in abandoned:
        message.refresh_from_db()
        assert (message.status, message.error_code, message.credits_reserved, message.lease_until) == (
            "FAILED",
            "abandoned",
            0,
            None,
        )
    for message, expected in (
        (recently_dead, ("PENDING", 2)),
        (in_flight, ("PENDING", 1)),
        (answered, ("ANSWERED", 0)),
    ):
        message.refresh_from_db()
        assert (message.status, message.credits_reserved) == expected
    rich_workspace.refresh_from_db()
    assert (rich_workspace.credit_balance, rich_workspace.credit_reserved) == (100, 3)


# --- the command and the task ---------------------------------------------------------------------------------


def seed_expired_and_live(workspace):
    """Two of each: expired and live idempotency records, media assets (with files), reservations."""
    now = timezone.now()
    conversation = conversation_of(workspace)
    long_dead = now - timedelta(seconds=ABANDONED_MARGIN_SECONDS) - HOUR
    return {
        "expired_record": record(workspace, "old", expires_at=now - HOUR),
        "live_record": record(workspace, "live", expires_at=now + HOUR),
        "expired_asset": asset(workspace, b"\x89PNG expired", expires_at=now - HOUR),
        "live_asset": asset(workspace, b"\x89PNG live", expires_at=now + HOUR),
        "abandoned": inbound(conversation, 1, lease_until=long_dead, credits_reserved=4),
        "in_flight": inbound(conversation, 2, lease_until=now + HOUR, credits_reserved=1),
    }


def assert_cleaned(seeded, workspace):
    assert list(IdempotencyRecord.objects.values_list("pk", flat=True)) == [seeded["live_record"].pk]
    assert list(MediaAsset.objects.values_list("pk", flat=True)) == [seeded["live_asset"].pk]
    assert not default_storage.exists(seeded["expired_asset"].file.name)
    assert default_storage.exists(seeded["live_asset"].file.name)
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert statuses == {seeded["abandoned"].pk: "FAILED", seeded["in_flight"].pk: "PENDING"}
    workspace.refresh_from_db()
    assert workspace.credit_reserved == 1


def test_manage_py_cleanup_runs_it_all_and_prints_the_counts(rich_workspace):
    # given
    seeded = seed_expired_and_live(rich_workspace)
    out = io.StringIO()

    # when
    call_command("cleanup", stdout=out)

    # then
    assert out.getvalue() == (
        "Idempotency records deleted: 1\n"
        "Media assets deleted: 1\n"
        "Media files deleted: 1\n"
        "Abandoned messages released: 1 (4 credits returned)\n"
        "Idle conversations closed: 0\n"
    )
    assert_cleaned(seeded, rich_workspace)


def test_a_second_run_finds_nothing_to_do(rich_workspace):
    seed_expired_and_live(rich_workspace)
    cleanup_run()

    again = cleanup_run()

    assert (again.idempotency_records, again.media_assets, again.media_files, again.abandoned_messages) == (0, 0, 0, 0)


def test_without_redis_the_task_runs_in_the_caller(rich_workspace, settings):
    # given: no broker (the test settings run tasks eagerly, as base.py does without REDIS_URL)
    seeded = seed_expired_and_live(rich_workspace)

    # when
    cleanup_task.delay()

    # then
    assert_cleaned(seeded, rich_workspace)


def test_the_beat_schedule_runs_the_cleanup_task(settings):
    assert celery_app.conf.beat_schedule["cleanup"]["task"] == cleanup_task.name == "channels_app.tasks.cleanup_task"
    assert cleanup_task.name in celery_app.tasks


# --- a real worker on Redis ------------------------------------------------------------------------------------


@requires_redis
@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_on_redis_runs_the_cleanup():
    """The task goes through Redis to a worker (in a thread of this process, so it sees the test database
    and media folder); the worker's own database connection sees the committed rows."""
    from celery.contrib.testing.worker import start_worker
    from celery.result import EagerResult

    # given
    workspace = WorkspaceFactory(credit_balance=100)
    seeded = seed_expired_and_live(workspace)
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    try:
        with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=20):
            # when
            sent = cleanup_task.delay()
            assert not isinstance(sent, EagerResult)  # through the broker, not run in this thread

            # then: the reservations are the run's last step, so once they are released all is done
            deadline = time.monotonic() + 30
            while Message.objects.filter(pk=seeded["abandoned"].pk, status="PENDING").exists():
                assert time.monotonic() < deadline, "the worker did not run the clean-up within 30 s"
                time.sleep(0.1)
    finally:
        celery_app.conf.task_always_eager = eager
    assert_cleaned(seeded, workspace)
