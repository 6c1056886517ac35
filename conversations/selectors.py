from datetime import datetime
from typing import Any

from django.db.models import F, FilteredRelation, Q, QuerySet

from contacts.models import Contact
from conversations.models import Conversation, Message


def contact_with_active_conversation(
    *, workspace_id: str, channel_id: str, identifier_key: str
) -> dict[str, Any] | None:
    """The contact whose normalised identifier is `identifier_key` (contacts.identity) and its active
    conversation on the channel, in one indexed query.

    Returns None for an unknown contact; `conversation_id` is None when the contact has no active
    conversation on this channel.
    """
    row = (
        Contact.objects.filter(workspace_id=workspace_id, identifier_key=identifier_key)
        .annotate(
            active_conversation=FilteredRelation(
                "conversations",
                condition=Q(conversations__channel_id=channel_id, conversations__status=Conversation.Status.ACTIVE),
            )
        )
        .values(
            "id",
            "name",
            conversation_id=F("active_conversation__id"),
            conversation_created_at=F("active_conversation__created_at"),
            conversation_agent_id=F("active_conversation__agent_id"),
        )
        .first()
    )
    return row


def history_window_queryset(*, conversation_id: str, seq: int, limit: int) -> QuerySet[Message, Any]:
    """The last `limit` messages of the conversation up to position `seq`, newest first.

    Reads the (conversation, seq, part) unique index backwards and stops after `limit` rows: its cost does
    not grow with the conversation's length.
    """
    return (
        Message.objects.filter(conversation_id=conversation_id, seq__lte=seq)
        .order_by("-seq", "-part")
        .values("id", "seq", "part", "direction", "type", "content", "status", "lease_until")[:limit]
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
