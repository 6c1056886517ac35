"""The conversation runtime's writes. Each function runs inside the caller's short transaction."""

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Q

from config.errors import ApplicationError
from contacts.identity import identifier_key
from contacts.models import Contact
from contacts.services import contact_build, contact_name_fill
from conversations.agents.base import HistoryItem, MediaPart
from conversations.models import Conversation, Message, content_body, media_filename
from conversations.selectors import contact_with_active_conversation, earlier_message_pending, history_window


class ContactErased(ApplicationError):
    """The contact was erased (DELETE /api/v1/contacts/{id}) while this message was on its way: nothing of it
    is recorded in the erased conversation."""

    code = "contact_erased"
    status_code = 409
    default_message = (
        "The contact was erased while this message was being answered, so nothing of it was kept. Send the "
        "message again: it starts a new contact."
    )


@dataclass
class StoredInbound:
    contact_id: str
    conversation_id: str
    conversation_created_at: datetime
    message: Message
    # The id of the contact's earlier conversation when it was closed here for inactivity: the caller
    # announces the close (its `conversation.closed` event) in the same transaction.
    closed_idle_id: str | None = None
    # What the agent is told about the contact (README "Contact attributes and labels").
    contact_name: str = ""
    contact_attributes: dict[str, str] = field(default_factory=dict)
    # The agent a transfer_to_agent gave the conversation (it answers instead of the channel's); None: none.
    transferred_agent_id: str | None = None


def _close(*, where: str, params: list[Any], reason: str, now: datetime) -> list[str]:
    """Close the ACTIVE conversations `where` selects, in one conditional UPDATE, and return the ids of those
    it closed. The status condition is checked again on the locked row: of two closes racing, and of a
    close racing a message's position step (api/flow/writes.py), each row is closed once, and never under a
    message still being accepted (the close waits for that transaction's row lock, then sees the row as it
    committed)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Conversation._meta.db_table} SET status = %s, closed_at = %s, close_reason = %s "
            f"WHERE status = %s AND {where} RETURNING id",
            [Conversation.Status.CLOSED, now, reason, Conversation.Status.ACTIVE, *params],
        )
        return [row[0] for row in cursor.fetchall()]


def conversation_close(*, conversation_id: str, workspace_id: str, reason: str, now: datetime) -> bool:
    """Close the workspace's conversation if it is active. False when it was already closed or is not the
    workspace's (the caller tells these apart). Run it inside the transaction that announces the close
    (its `conversation.closed` event), so that a close is announced exactly once."""
    return bool(
        _close(where="id = %s AND workspace_id = %s", params=[conversation_id, workspace_id], reason=reason, now=now)
    )


def conversations_close_of_contact(*, contact_id: str, reason: str, now: datetime) -> list[str]:
    """Close the contact's active conversations (its erasure); returns their ids, for their events."""
    return _close(where="contact_id = %s", params=[contact_id], reason=reason, now=now)


def conversations_close_idle(*, conversation_ids: list[str], idle_before: datetime, now: datetime) -> list[str]:
    """Close, for inactivity, those of the conversations that are still active and whose last message is
    older than `idle_before`; returns their ids. A message that arrived since the caller looked keeps its
    conversation open."""
    if not conversation_ids:
        return []
    marks = ", ".join(["%s"] * len(conversation_ids))
    return _close(
        where=f"id IN ({marks}) AND last_message_at < %s",
        params=[*conversation_ids, idle_before],
        reason=Conversation.CloseReason.INACTIVITY,
        now=now,
    )


@dataclass
class InboundTarget:
    """Where a contact's message goes (`inbound_target`): its contact (`contact`: a new one, not saved yet) and
    the active conversation to append it to (`append_to`; None: open a new one)."""

    contact_id: str
    contact: Contact | None
    append_to: str | None
    conversation_created_at: datetime | None
    conversation_agent_id: str | None
    closed_idle_id: str | None  # the contact's conversation, closed here for inactivity (its event is the caller's)
    contact_name: str = ""
    contact_attributes: dict[str, str] = field(default_factory=dict)
    conversation_agent_transferred: bool = False

    def agent_context(self) -> dict[str, Any]:
        """StoredInbound's fields for the agent: the contact, and the agent of a transferred conversation."""
        return dict(
            contact_name=self.contact_name,
            contact_attributes=self.contact_attributes,
            transferred_agent_id=self.conversation_agent_id if self.conversation_agent_transferred else None,
        )


def inbound_target(
    *,
    workspace_id: str,
    channel_id: str,
    inactivity_timeout_seconds: int,
    contact_identifier: str,
    contact_name: str,
    now: datetime,
) -> InboundTarget:
    """The contact and active conversation of a message (api/flow/writes.py, `inbound_accept`), in one indexed
    query; a known contact without a name takes `contact_name`, and a conversation idle for longer than the
    channel's timeout is closed here. Nothing else is written: the caller stores the contact, the conversation
    and the message."""
    row = contact_with_active_conversation(
        workspace_id=workspace_id, channel_id=channel_id, identifier_key=identifier_key(contact_identifier)
    )
    if row is None:
        contact = contact_build(workspace_id=workspace_id, identifier=contact_identifier, name=contact_name)
        return InboundTarget(
            contact_id=contact.pk,
            contact=contact,
            append_to=None,
            conversation_created_at=None,
            conversation_agent_id=None,
            closed_idle_id=None,
            contact_name=contact_name,
        )
    if contact_name and not row["name"]:
        contact_name_fill(contact_id=row["id"], name=contact_name, now=now)
    append_to, closed_idle_id = row["conversation_id"], None
    last = row["conversation_last_message_at"]
    if append_to is not None and inactivity_timeout_seconds and last is not None:
        idle_before = now - timedelta(seconds=inactivity_timeout_seconds)
        if last < idle_before:
            closed = conversations_close_idle(conversation_ids=[append_to], idle_before=idle_before, now=now)
            if closed:
                append_to, closed_idle_id = None, closed[0]
    attributes = row["attributes"]
    return InboundTarget(
        contact_id=row["id"],
        contact=None,
        append_to=append_to,
        conversation_created_at=row["conversation_created_at"],
        conversation_agent_id=row["conversation_agent_id"],
        closed_idle_id=closed_idle_id,
        contact_name=row["name"] or contact_name,
        contact_attributes=json.loads(attributes) if isinstance(attributes, str) else (attributes or {}),
        conversation_agent_transferred=bool(append_to and row["conversation_agent_transferred"]),
    )


def conversation_build(
    *, workspace_id: str, channel_id: str, contact_id: str, agent_id: str, now: datetime
) -> Conversation:
    """A new active conversation whose first message is at position 1, not saved yet; created and last
    written to at `now`."""
    return Conversation(
        workspace_id=workspace_id,
        channel_id=channel_id,
        contact_id=contact_id,
        agent_id=agent_id,
        last_seq=1,
        created_at=now,
        last_message_at=now,
    )


def inbound_message_build(
    *,
    conversation_id: str,
    seq: int,
    type: str,
    content: dict[str, Any],
    metadata: dict[str, str],
    lease_until: datetime,
    credits_reserved: int,
) -> Message:
    """A contact's message, waiting for its answer under its request's lease, not saved yet."""
    return Message(
        conversation_id=conversation_id,
        seq=seq,
        part=0,
        direction=Message.Direction.INBOUND,
        type=type,
        content=content,
        metadata=metadata,
        status=Message.Status.PENDING,
        lease_until=lease_until,
        credits_reserved=credits_reserved,
    )


_ANSWERED = frozenset({Message.Status.ANSWERED})
_BURST_SHOWN = frozenset({Message.Status.ANSWERED, Message.Status.SUPERSEDED, Message.Status.PENDING})


class TurnNotReady(Exception):
    """An earlier message of the conversation is still being answered."""


def text_chars(content: Any) -> int:
    """The characters of text a message carries: the strings inside its content (a body; a caption, file
    name and URL), not the JSON's keys and punctuation. What the history's character budget counts."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, dict):
        return sum(text_chars(value) for value in content.values())
    if isinstance(content, list):
        return sum(text_chars(value) for value in content)
    return 0


def history_build(
    *, message: Message, max_messages: int, max_chars: int, now: datetime, burst: bool = False
) -> list[HistoryItem]:
    """The agent's view of the conversation: recent answered messages, oldest first, then `message`.

    Raises TurnNotReady while an earlier message still waits for its answer, so replies keep the order of
    the messages. One query on the (conversation, seq, part) index, whatever the conversation's length.
    With `burst` (the latest burst mode: `message` answers the earlier unanswered ones, and its caller has
    waited for what it must, api/flow/messaging.py) nothing is waited for, and the earlier messages still
    waiting or superseded are shown too: the agent sees every message of the burst.

    The budgets hold for all the agent sees, `message` included: at most `max_messages` messages and
    `max_chars` characters of text (`text_chars`). Earlier messages are left out oldest first; `message` is
    always sent, even alone over the budget. The history starts with a contact's message: replies whose
    question fell out of the window would read as the agent talking to itself.
    """
    current = HistoryItem(role="user", type=message.type, content=message.content, metadata=message.metadata)
    if message.seq == 1:
        return [current]  # the conversation's first message: nothing earlier to wait for or to show, no query
    # One row more than the messages allowed: `message` itself is in the window, and the window must reach
    # the message before it (earlier_message_pending) even when the agent sees no history at all.
    window = history_window(conversation_id=message.conversation_id, seq=message.seq, limit=max(max_messages, 1) + 1)
    if not burst and earlier_message_pending(window=window, seq=message.seq, now=now):
        raise TurnNotReady
    shown = _BURST_SHOWN if burst else _ANSWERED
    earlier: list[tuple[dict[str, Any], str]] = []  # newest first, each with its media's text
    budget = max_chars - text_chars(message.content)
    for row in window:
        if row["seq"] == message.seq:
            continue  # `message` itself; it goes last
        if row["direction"] == Message.Direction.INBOUND and row["status"] not in shown:
            continue  # a failed or abandoned message got no answer: the model would see a question hanging
        size = text_chars(row["content"])
        if len(earlier) >= max_messages - 1 or size > budget:
            break
        # A document's text or an audio's transcription counts too; cut to what the budget leaves.
        media_text = (row["media_asset__text"] or "")[: budget - size] if _has_media(row) else ""
        budget -= size + len(media_text)
        earlier.append((row, media_text))
    earlier.reverse()
    while earlier and earlier[0][0]["direction"] == Message.Direction.OUTBOUND:
        earlier.pop(0)
    items = [
        HistoryItem(
            role="user" if row["direction"] == Message.Direction.INBOUND else "assistant",
            type=row["type"],
            content=row["content"],
            media=_history_media(row, text=media_text) if _has_media(row) else None,
        )
        for row, media_text in earlier
    ]
    items.append(current)
    return items


def _has_media(row: dict[str, Any]) -> bool:
    return row["type"] != Message.Type.TEXT and row["direction"] == Message.Direction.INBOUND


def _history_media(row: dict[str, Any], *, text: str) -> MediaPart:
    """What an earlier media message's row says about its file: type, size, file name, the cached file's
    name (the bytes are read later, outside any transaction, within a budget:
    media.pipeline.history_media_load) and `text`, the document's text or the audio's transcription, as on
    its own turn. The URL is left out on purpose: it is the contact's, often signed, and never goes to the
    provider."""
    body = content_body(type=row["type"], content=row["content"])
    return MediaPart(
        url="",
        mime_type=row["media_mime_type"] or "",
        size=row["media_size"] or 0,
        filename=media_filename(type=row["type"], content=row["content"]),
        caption=str(body.get("caption") or ""),
        text=text,
        stored_name=row["media_asset__file"] or "",
        sha256=row["media_asset__sha256"] or "",
    )


def replies_build(
    *, message: Message, texts: list[str], credits: int, input_tokens: int, output_tokens: int
) -> list[Message]:
    """The agent's replies to `message`, at its position, parts 1, 2, ..., not saved yet (api/flow/writes.py)."""
    return [
        Message(
            conversation_id=message.conversation_id,
            seq=message.seq,
            part=index,
            direction=Message.Direction.OUTBOUND,
            type=Message.Type.TEXT,
            content={"text": {"body": text}},
            status=Message.Status.SENT,
            reply_to_id=message.id,
            credits=credits if index == 1 else 0,
            input_tokens=input_tokens if index == 1 else 0,
            output_tokens=output_tokens if index == 1 else 0,
        )
        for index, text in enumerate(texts, start=1)
    ]


@dataclass
class StoredReplies:
    messages: list[Message]
    # The conversation as the replies left it: closed while the agent thought, it stays closed.
    status: str
    closed_at: datetime | None = None
    close_reason: str | None = None
    labels: tuple[str, ...] = ()


def inbound_message_fail(*, message_id: str, error_code: str, reserved: int) -> int:
    """Record that the agent gave no answer; the message stays in the conversation and its turn ends.
    Returns the reservation taken off the message (0 when the clean-up already released it): the caller
    releases exactly that, so a reservation is never given back twice."""
    failed = Message.objects.filter(pk=message_id, status=Message.Status.PENDING, credits_reserved=reserved).update(
        status=Message.Status.FAILED, lease_until=None, credits_reserved=0, error_code=error_code
    )
    return reserved if failed else 0


def inbound_message_lease_extend(*, message_id: str, lease_until: datetime) -> None:
    """Move a pending message's lease to `lease_until` (api.flow.messaging._lease_keep): its request is
    alive, so later messages of the conversation keep waiting for it. An answered or failed message has no
    lease to keep."""
    Message.objects.filter(pk=message_id, status=Message.Status.PENDING).update(lease_until=lease_until)


def inbound_message_lock_pending(*, message_id: str) -> bool:
    """Inside the caller's transaction: lock the message's row and say whether it still waits for its answer.
    Two runs of one answer (a task delivered twice) both reach their record phase; the row's lock makes the
    second see the first's result and store nothing."""
    return Message.objects.select_for_update(no_key=True).filter(pk=message_id, status=Message.Status.PENDING).exists()


def inbound_message_lease_take(*, message_id: str, expected: datetime, now: datetime, lease_until: datetime) -> bool:
    """Take a pending message's lease for a run of its answer (api/flow/later.py): when the lease is still the one
    `expected` (set when the message was accepted, for this run) or has run out (the run that held it died).
    False when the message no longer waits, or another live run holds it."""
    return bool(
        Message.objects.filter(pk=message_id, status=Message.Status.PENDING)
        .filter(Q(lease_until=expected) | Q(lease_until__lt=now) | Q(lease_until=None))
        .update(lease_until=lease_until)
    )


def inbound_message_resume(*, message_id: str, lease_until: datetime) -> Message:
    """Take a stored inbound message up again (a retry with its idempotency key): it waits for its answer."""
    Message.objects.filter(pk=message_id).exclude(status=Message.Status.ANSWERED).update(
        status=Message.Status.PENDING, lease_until=lease_until, error_code=""
    )
    return Message.objects.select_related("conversation__contact").get(pk=message_id)
