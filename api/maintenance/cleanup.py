"""The periodic clean-ups, the inactivity close of conversations among them. Celery beat runs `cleanup_task`
(api.tasks); `manage.py cleanup` runs the same `cleanup_run` synchronously.

Everything goes in batches, each in its own short transaction, so a day's backlog never holds a lock or a
long transaction, and a run that overlaps another (a slow worker, a manual run) only finds less to do.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from analytics.stats import message_stats_failed
from api.maintenance.conversations import conversations_closed_announce
from api.models import IdempotencyRecord
from billing.credits import credits_release
from channels_app.models import Channel
from config.errors import ApplicationError
from conversations.media.cache import media_assets_purge
from conversations.models import Conversation, Message
from conversations.services import conversations_close_idle
from webhooks.services import message_failed_emit

IDEMPOTENCY_PURGE_BATCH_SIZE = 1000  # rows per DELETE: no cascade, a stored response is at most ~64 KiB
ABANDONED_BATCH_SIZE = 100  # message rows locked per transaction
# Conversations closed per transaction: each close writes its webhook event and delivery in the same
# transaction, so a batch is a few hundred short inserts and its row locks are held for milliseconds.
IDLE_CLOSE_BATCH_SIZE = 100
# An inbound message still PENDING this long after its lease ran out lost its request: the process died
# between accept and record. A live request never lets its lease run out: the lease covers its media step
# and its agent call, and it is renewed while the request waits for its turn
# (api.flow.messaging.lease_seconds); the margin covers clocks of different machines and a request
# that a stalled process finishes late, which would otherwise release the same reservation a second time.
ABANDONED_MARGIN_SECONDS = 600
ABANDONED_ERROR_CODE = "abandoned"


def abandoned_margin_seconds() -> float:
    """How long after its lease ran out a PENDING message counts as abandoned: ABANDONED_MARGIN_SECONDS, and
    never before the broker could have handed a killed worker's task to another worker (its visibility
    timeout, plus the interval at which workers look for such tasks, plus a minute): that worker's run takes
    the message over (README "Replies later"), so the clean-up must not fail it first. The order holds by
    construction, whatever the settings."""
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    redelivery = float(options.get("visibility_timeout", 0)) + float(options.get("unacked_restore_interval", 0))
    return max(float(ABANDONED_MARGIN_SECONDS), redelivery + 60.0)


class MessageAbandoned(ApplicationError):
    """A message whose answer was lost with the process answering it (the clean-up found its lease long run
    out): in its `message.failed` event."""

    code = ABANDONED_ERROR_CODE
    status_code = 504
    default_message = (
        "The message was not answered: the process answering it stopped. Send it again with the same "
        "idempotency key to have it answered."
    )


@dataclass
class CleanupResult:
    idempotency_records: int = 0
    media_assets: int = 0
    media_files: int = 0
    abandoned_messages: int = 0
    abandoned_credits: int = 0
    idle_conversations: int = 0


def cleanup_run(*, now: datetime | None = None) -> CleanupResult:
    """All clean-ups, as of `now` (default: the current time)."""
    now = now or timezone.now()
    result = CleanupResult()
    result.idempotency_records = idempotency_records_purge(now=now)
    media = media_assets_purge(now=now)
    result.media_assets, result.media_files = media.assets, media.files
    result.abandoned_messages, result.abandoned_credits = abandoned_messages_release(now=now)
    result.idle_conversations = idle_conversations_close(now=now)
    return result


def idle_conversations_close(*, now: datetime, batch_size: int = IDLE_CLOSE_BATCH_SIZE) -> int:
    """Close the active conversations whose last message is older than their channel's
    `inactivity_timeout_seconds` (0: never), reason `inactivity`, each with its `conversation.closed`
    event in the batch's transaction. Returns how many were closed.

    The clean-up only tidies up: a message to a timed-out conversation closes it itself at once
    (conversations.services.inbound_target). The channels are taken by timeout, and there are few
    distinct timeouts; each batch reads the oldest active conversations through their partial index
    (`conversation_active_idle`). The close re-checks the conditions on each locked row, so a message
    that arrives in between keeps its conversation open.
    """
    timeouts = sorted(
        set(
            Channel.objects.filter(inactivity_timeout_seconds__gt=0)
            .order_by()
            .values_list("inactivity_timeout_seconds", flat=True)
            .distinct()
        )
    )
    closed = 0
    for timeout in timeouts:
        idle_before = now - timedelta(seconds=timeout)
        while True:
            with transaction.atomic():
                ids = list(
                    Conversation.objects.filter(
                        status=Conversation.Status.ACTIVE,
                        last_message_at__lt=idle_before,
                        channel__inactivity_timeout_seconds=timeout,
                    )
                    .order_by("last_message_at")
                    .values_list("pk", flat=True)[:batch_size]
                )
                done = conversations_close_idle(conversation_ids=ids, idle_before=idle_before, now=now)
                conversations_closed_announce(conversation_ids=done)
            closed += len(done)
            if len(ids) < batch_size:
                break
    return closed


def idempotency_records_purge(*, now: datetime, batch_size: int = IDEMPOTENCY_PURGE_BATCH_SIZE) -> int:
    """Delete the idempotency records past their retention (`expires_at`). A key past its retention is
    already treated as unknown by idempotency_claim; this only frees the space. Returns the count."""
    deleted = 0
    while True:
        ids = list(
            IdempotencyRecord.objects.filter(expires_at__lte=now)
            .order_by("pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        count, _ = IdempotencyRecord.objects.filter(pk__in=ids, expires_at__lte=now).delete()
        deleted += count
        if len(ids) < batch_size:
            return deleted


def abandoned_messages_release(*, now: datetime, batch_size: int = ABANDONED_BATCH_SIZE) -> tuple[int, int]:
    """Give back the credits still reserved by inbound messages whose request died.

        Such a message is PENDING with `credits_reserved` > 0 and a lease that ran out more than
        abandoned_margin_seconds() ago. It becomes FAILED with error_code "abandoned" (kept in its conversation,
        like any failed message; a retry with its idempotency key takes it up again and reserves anew), and its
        workspace's `credit_reserved` drops by what it held. Each batch is one transaction that locks the
        message rows in primary-key order, then the workspace rows in primary-key order: the requests take
        the same two kinds of lock in the same order (message, then workspace). Each sends its channel's webhook a
    `message.failed` event (code `abandoned`). Returns (messages, credits).
    """
    cutoff = now - timedelta(seconds=abandoned_margin_seconds())
    messages = credits = 0
    while True:
        with transaction.atomic():
            rows = list(
                Message.objects.select_for_update(no_key=True, of=("self",))
                .filter(
                    direction=Message.Direction.INBOUND,
                    status=Message.Status.PENDING,
                    credits_reserved__gt=0,
                    lease_until__lt=cutoff,
                )
                .order_by("pk")
                .values_list(
                    "pk",
                    "credits_reserved",
                    "conversation__workspace_id",
                    "conversation_id",
                    "conversation__channel_id",
                    "conversation__contact_id",
                )[:batch_size]
            )
            if not rows:
                return messages, credits
            Message.objects.filter(pk__in=[row[0] for row in rows]).update(
                status=Message.Status.FAILED,
                error_code=ABANDONED_ERROR_CODE,
                lease_until=None,
                credits_reserved=0,
            )
            held: dict[str, int] = defaultdict(int)
            for _, amount, workspace_id, *_ in rows:
                held[workspace_id] += amount
            for workspace_id in sorted(held):
                credits_release(workspace_id=workspace_id, amount=held[workspace_id])
            message_stats_failed(message_ids=[row[0] for row in rows], error_code=ABANDONED_ERROR_CODE, at=now)
            for pk, _, _, conversation_id, channel_id, contact_id in rows:
                # announced like any failure, in the same transaction (README "Webhooks")
                message_failed_emit(
                    channel_id=channel_id,
                    contact_id=contact_id,
                    conversation_id=conversation_id,
                    message_id=pk,
                    error=MessageAbandoned(),
                )
        messages += len(rows)
        credits += sum(held.values())
        if len(rows) < batch_size:
            return messages, credits
