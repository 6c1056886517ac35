from datetime import datetime
from typing import Any

from django.db.models import F, FilteredRelation, Q, QuerySet

from contacts.models import Contact
from conversations.models import Conversation, Message


def contact_with_open_conversation(*, workspace_id: str, channel_id: str, identifier: str) -> dict[str, Any] | None:
    """The contact named `identifier` and its open conversation on the channel, in one indexed query.

    Returns None for an unknown contact; `conversation_id` is None when the contact has no open
    conversation on this channel.
    """
    row = (
        Contact.objects.filter(workspace_id=workspace_id, identifier=identifier)
        .annotate(
            open_conversation=FilteredRelation(
                "conversations",
                condition=Q(conversations__channel_id=channel_id, conversations__status=Conversation.Status.OPEN),
            )
        )
        .values(
            "id",
            "name",
            conversation_id=F("open_conversation__id"),
            conversation_created_at=F("open_conversation__created_at"),
            conversation_agent_id=F("open_conversation__agent_id"),
        )
        .first()
    )
    return row


def history_window_queryset(*, conversation_id: str, seq: int, limit: int) -> QuerySet[Message, Any]:
    """The last `limit` messages of the conversation up to position `seq`, newest first.

    Reads the (conversation, seq, part) unique index backwards and stops after `limit` rows: its cost does
    not grow with the conversation's length. A media message's cached file (name and hash) comes along
    through a left join on the asset's primary key, one index probe per row of the window.
    """
    return (
        Message.objects.filter(conversation_id=conversation_id, seq__lte=seq)
        .order_by("-seq", "-part")
        .values(
            "id",
            "seq",
            "part",
            "direction",
            "type",
            "content",
            "status",
            "lease_until",
            "media_mime_type",
            "media_size",
            "media_asset__file",
            "media_asset__sha256",
        )[:limit]
    )


def history_window(*, conversation_id: str, seq: int, limit: int) -> list[dict[str, Any]]:
    """`history_window_queryset`, read: one query."""
    return list(history_window_queryset(conversation_id=conversation_id, seq=seq, limit=limit))


def earlier_message_pending(*, window: list[dict[str, Any]], seq: int, now: datetime) -> bool:
    """True while an earlier inbound message in the window still waits for its answer (and its request is
    alive: its lease has not run out). The window holds the message just before `seq`, and that message
    itself waited for the one before it, so checking the window keeps the whole conversation in order."""
    return any(
        row["direction"] == Message.Direction.INBOUND
        and row["seq"] < seq
        and row["status"] == Message.Status.PENDING
        and row["lease_until"] is not None
        and row["lease_until"] > now
        for row in window
    )
