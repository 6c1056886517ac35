"""Webhook services: a channel's webhook, and the events its activity emits (README "Webhooks").

`event_emit` is the outbox: called inside the transaction that produced the event, it writes the event and
its delivery there, and only after that transaction commits hands the delivery to a worker
(webhooks/dispatch.py). A rolled-back transaction emits nothing; a committed one can never lose its event.
"""

import json
from datetime import UTC, datetime
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from channels_app.models import Channel
from channels_app.selectors import ChannelNotFound
from config.errors import ApplicationError
from webhooks.address import webhook_url_check
from webhooks.errors import WebhookNotFound
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.secret import secret_encrypt, secret_generate

EventType = WebhookEvent.Type


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(value: Any) -> str:
    # As the API renders its bodies: compact, UTF-8. json escapes U+0000 (`\u0000`), so the text fits any
    # database column.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- the channel's webhook --------------------------------------------------------------------------------


def _channel(*, channel_id: str) -> Channel:
    channel = Channel.objects.filter(pk=channel_id).first()
    if channel is None:
        raise ChannelNotFound(f"No channel has the id {channel_id!r}. Check the id (it starts with ch_).")
    return channel


@transaction.atomic
def webhook_set(*, channel_id: str, url: str) -> str:
    """Point the channel's webhook at `url` and give it a new signing secret, which is returned (the only
    time it is readable outside a delivery). Raises ChannelNotFound, or WebhookUrlNotAllowed when the URL
    breaks the address rules (webhooks.address). Deliveries still pending go to the new URL, signed with the
    new secret."""
    channel = _channel(channel_id=channel_id)
    url = url.strip()
    webhook_url_check(url=url)
    secret = secret_generate()
    WebhookEndpoint.objects.update_or_create(
        channel=channel,
        defaults={"url": url, "secret_encrypted": secret_encrypt(secret=secret), "secret_set_at": timezone.now()},
    )
    return secret


def webhook_url_change(*, channel_id: str, url: str) -> None:
    """Point the channel's existing webhook at `url`, keeping its secret (the admin's edit). Raises
    WebhookUrlNotAllowed when the URL breaks the address rules, WebhookNotFound without a webhook."""
    url = url.strip()
    webhook_url_check(url=url)
    if not WebhookEndpoint.objects.filter(channel_id=channel_id).update(url=url, updated_at=timezone.now()):
        raise WebhookNotFound(details={"channelId": channel_id})


def webhook_secret_rotate(*, channel_id: str) -> str:
    """A new signing secret for the channel's webhook, returned once. The old one signs nothing from now
    on: every attempt reads the secret when it starts."""
    secret = secret_generate()
    updated = WebhookEndpoint.objects.filter(channel_id=channel_id).update(
        secret_encrypted=secret_encrypt(secret=secret), secret_set_at=timezone.now(), updated_at=timezone.now()
    )
    if not updated:
        _channel(channel_id=channel_id)
        raise WebhookNotFound(
            f"The channel {channel_id} has no webhook. Set one with `manage.py webhook set {channel_id} URL`.",
            details={"channelId": channel_id},
        )
    return secret


# --- events ----------------------------------------------------------------------------------------------


def event_emit(
    *,
    channel_id: str,
    type: str,
    data: dict[str, Any] | bytes,
    contact_id: str = "",
    now: datetime | None = None,
) -> WebhookEvent | None:
    """Record an event of the channel for its webhook; None (and nothing written) when it has none.

    Call it inside the transaction that makes the event true (it joins it; alone it opens its own): the
    event and its delivery commit or roll back with it. `data` is the event's `data` object, or JSON bytes
    already rendered (the messages endpoint's 200 body, embedded byte for byte). The body is
    `{"type", "timestamp", "data"}`, fixed here: every attempt sends exactly these bytes. After commit the
    delivery goes to a worker (webhooks.dispatch); should that hand-over fail, the periodic sweep finds it.
    """
    if type not in EventType.values:
        raise ValueError(f"unknown webhook event type {type!r}")
    now = now or timezone.now()
    with transaction.atomic():
        workspace_id = (
            WebhookEndpoint.objects.filter(channel_id=channel_id)
            .values_list("channel__workspace_id", flat=True)
            .first()
        )
        if workspace_id is None:
            return None
        rendered = data.decode() if isinstance(data, bytes) else _json(data)
        # The head rendered as JSON, `data` spliced in as given: a message.replied's data is the 200 body's bytes.
        payload = _json({"type": type, "timestamp": _iso(now)})[:-1] + ',"data":' + rendered + "}"
        event = WebhookEvent.objects.create(
            workspace_id=workspace_id,
            channel_id=channel_id,
            contact_id=contact_id,
            type=type,
            payload=payload,
            created_at=now,
        )
        delivery = WebhookDelivery.objects.create(event=event, next_attempt_at=now)
        _dispatch_on_commit([(delivery.pk, "")])
    return event


def message_replied_emit(*, channel_id: str, contact_id: str, body: bytes) -> WebhookEvent | None:
    """`message.replied`: `data` is the messages endpoint's 200 body, exactly as rendered (`body`)."""
    return event_emit(channel_id=channel_id, type=EventType.MESSAGE_REPLIED, data=body, contact_id=contact_id)


def message_failed_emit(
    *, channel_id: str, contact_id: str, conversation_id: str, message_id: str, error: BaseException
) -> WebhookEvent | None:
    """`message.failed`: the error body the request answered (`internal_error` for an unexpected exception,
    whose text is never sent) plus the message's ids."""
    known = error if isinstance(error, ApplicationError) else ApplicationError()
    data = {
        "success": False,
        "error": {"code": known.code, "message": known.message, "details": known.details},
        "contactId": contact_id,
        "conversationId": conversation_id,
        "messageId": message_id,
    }
    return event_emit(channel_id=channel_id, type=EventType.MESSAGE_FAILED, data=data, contact_id=contact_id)


def conversation_closed_emit(*, channel_id: str, conversation: dict[str, Any]) -> WebhookEvent | None:
    """`conversation.closed`: `data` is `{"conversation": {...}}`, the API's conversation object."""
    return event_emit(
        channel_id=channel_id,
        type=EventType.CONVERSATION_CLOSED,
        data={"conversation": conversation},
        contact_id=str(conversation.get("contactId") or ""),
    )


def deliveries_redeliver(*, delivery_ids: list[str]) -> int:
    """Send the events of these deliveries again, with the same `webhook-id` (the event's id): a pending one becomes
    due now; a finished one (succeeded or failed) gets a new delivery, due now, with a fresh retry
    schedule. Returns how many deliveries were scheduled."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            WebhookDelivery.objects.select_for_update(no_key=True)
            .filter(pk__in=delivery_ids)
            .order_by("pk")
            .values_list("pk", "event_id", "status")
        )
        pending = [pk for pk, _, status in rows if status == WebhookDelivery.Status.PENDING]
        WebhookDelivery.objects.filter(pk__in=pending).update(next_attempt_at=now)
        finished_events = sorted({event_id for _, event_id, status in rows if status != WebhookDelivery.Status.PENDING})
        created = WebhookDelivery.objects.bulk_create(
            [WebhookDelivery(event_id=event_id, next_attempt_at=now) for event_id in finished_events]
        )
        scheduled = [*pending, *(delivery.pk for delivery in created)]
        _dispatch_on_commit([(pk, "") for pk in scheduled])
    return len(scheduled)


def _dispatch_on_commit(claims: list[tuple[str, str]]) -> None:
    from webhooks.dispatch import deliveries_dispatch  # the dispatcher imports the tasks, which import us

    # robust: a failing hand-over (the broker is down) must not turn the caller's committed work into an
    # error; the delivery is in the database and the sweep sends it.
    transaction.on_commit(partial(deliveries_dispatch, claims=claims), robust=True)


def events_erase_for_contact(*, contact_id: str) -> int:
    """Blank the payload of every event about the contact (erasure, api/maintenance/erasure.py) and stop their pending
    deliveries: an event's body is the messages endpoint's 200 body, the contact's words and the agent's. The
    answers their receivers gave are blanked too. The events, their deliveries and attempts stay, for
    operators. Returns the events blanked."""
    pending = WebhookDelivery.objects.filter(event__contact_id=contact_id, status=WebhookDelivery.Status.PENDING)
    pending.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None, last_outcome="erased")
    # A receiver's answer is kept per attempt (its first KiB), and a receiver that echoes the payload
    # answers with the contact's words.
    WebhookAttempt.objects.filter(delivery__event__contact_id=contact_id).exclude(response_excerpt="").update(
        response_excerpt=""
    )
    return WebhookEvent.objects.filter(contact_id=contact_id).exclude(payload="").update(payload="")
