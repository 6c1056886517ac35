"""Erasing a contact (DELETE /api/v1/contacts/{id}, README "Erasing a contact").

What goes: the contact's identifier, name and attributes, the content and metadata of every message of its
conversations (inbound and the agent's), the agent's actions and HTTP tool calls, the stored 200 bodies
(`Message.result`), its messages' media assets (cached file, extracted text, URL) that no other contact's
message uses and each stored file no other asset names, the idempotency records of its messages (their
replayable bodies), and the payloads of its webhook events with the answers their receivers gave (an
attempt's excerpt may echo the payload). What stays: every id, the rows themselves (so counts hold), the
credits and the usage ledger.

The first step, one short transaction, cuts the contact off: the identifier becomes a placeholder no
request can name, its conversations are closed and marked erased. From then on a message of the contact
that was already in flight records nothing (conversations.services.ContactErased: its record phase's
UPDATE of the conversation is conditional on it not being erased, so the whole record rolls back). Then the
messages are erased in batches of ERASE_BATCH_SIZE, each its own short transaction, so a contact with a
million messages never holds a long lock. Idempotent: a DELETE again redoes whatever a first one left (a
request that died half-way), and answers zeros when there was nothing left.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from api.maintenance.conversations import conversations_closed_announce
from api.models import IdempotencyRecord
from contacts.errors import ContactNotFound
from contacts.models import Contact
from contacts.services import contact_erase_identity
from conversations.models import Conversation, MediaAsset, Message, ToolCall
from conversations.services import conversations_close_of_contact
from webhooks.services import events_erase_for_contact

# Rows per transaction: short enough that the message rows' locks are held for milliseconds, large enough
# that a contact with 1,000,000 messages takes 2,000 batches.
ERASE_BATCH_SIZE = 500
# What an erased message's content becomes, whatever its type (the type column stays).
ERASED_CONTENT: dict[str, Any] = {"erased": True}


@dataclass
class Erased:
    messages: int = 0
    media: int = 0


def contact_erase(*, workspace_id: str, contact_id: str, batch_size: int = ERASE_BATCH_SIZE) -> Erased:
    """Erase the workspace's contact (the module's docstring). Raises ContactNotFound for an unknown id or
    another workspace's contact. Runs its own transactions: call it outside any."""
    now = timezone.now()
    with transaction.atomic():
        if not Contact.objects.filter(pk=contact_id, workspace_id=workspace_id).exists():
            raise ContactNotFound(details={"contactId": contact_id})
        contact_erase_identity(contact_id=contact_id, now=now)
        closed = _conversations_mark_erased(contact_id=contact_id, now=now)
        IdempotencyRecord.objects.filter(message__conversation__contact_id=contact_id).exclude(
            state=IdempotencyRecord.State.IN_PROGRESS
        ).delete()
        events_erase_for_contact(contact_id=contact_id)
        # Closed like any other close, with its event (after the blanking: it holds ids and times only).
        conversations_closed_announce(conversation_ids=closed)
    erased = Erased()
    conversation_ids = list(
        Conversation.objects.filter(contact_id=contact_id).order_by("pk").values_list("pk", flat=True)
    )
    for conversation_id in conversation_ids:
        _conversation_messages_erase(conversation_id=conversation_id, batch_size=batch_size, erased=erased)
    return erased


def _conversations_mark_erased(*, contact_id: str, now: datetime) -> list[str]:
    """Close the contact's active conversations and mark all erased; returns the ids of those it closed."""
    closed = conversations_close_of_contact(contact_id=contact_id, reason=Conversation.CloseReason.API, now=now)
    Conversation.objects.filter(contact_id=contact_id, erased_at__isnull=True).update(erased_at=now)
    return closed


def _conversation_messages_erase(*, conversation_id: str, batch_size: int, erased: Erased) -> None:
    """Walk the conversation's messages by position (its unique index), batch by batch."""
    after: tuple[int, int] = (0, -1)
    while True:
        seq, part = after
        batch = list(
            Message.objects.filter(conversation_id=conversation_id, seq__gte=seq)
            .exclude(seq=seq, part__lte=part)
            .order_by("seq", "part")
            .values("pk", "seq", "part", "content", "media_asset_id", "media_asset__file")[:batch_size]
        )
        if not batch:
            return
        after = (batch[-1]["seq"], batch[-1]["part"])
        names = {row["media_asset__file"] for row in batch if row["media_asset__file"]}
        asset_ids = {row["media_asset_id"] for row in batch if row["media_asset_id"]}
        with transaction.atomic():
            # Every row of the batch, also one already erased: its stored result or metadata may have been
            # written by a record that committed just before the erasure's first step.
            # The agent's actions and HTTP tool calls too: their arguments and results may quote the contact.
            Message.objects.filter(pk__in=[row["pk"] for row in batch]).update(
                content=ERASED_CONTENT, metadata={}, result=None, media_asset=None, actions=[]
            )
            ToolCall.objects.filter(message_id__in=[row["pk"] for row in batch]).delete()
            if asset_ids:
                # An asset is the workspace's cache of a URL: another contact who sent the same URL has a
                # message that uses it too. Only the assets no other message uses go (with their text).
                unused = MediaAsset.objects.filter(pk__in=asset_ids).exclude(
                    Exists(Message.objects.filter(media_asset_id=OuterRef("pk")))
                )
                _, deleted = unused.delete()
                erased.media += deleted.get(MediaAsset._meta.label, 0)
        erased.messages += sum(1 for row in batch if row["content"] != ERASED_CONTENT)
        if names:
            still_named = set(MediaAsset.objects.filter(file__in=names).values_list("file", flat=True))
            for name in sorted(names - still_named):
                if default_storage.exists(name):
                    default_storage.delete(name)
        if len(batch) < batch_size:
            return
