import dataclasses
import threading
from datetime import datetime
from typing import Any

from django.db.models import F, FilteredRelation, Q, QuerySet

from channels_app.models import AIAgent, KnowledgeEntry
from contacts.models import Contact
from conversations.agents.base import AgentConfig, provider_uses_knowledge
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


# Knowledge entries per (agent, updated_at), per process: the built-in agent reads them on every message. Saving
# the agent, or saving or deleting any of its entries (channels_app/models.py, knowledge_entry_changed), moves
# `updated_at`, which the channel query reads with the agent, so a change is seen at the next message on
# every node without a query of its own.
_knowledge_cache: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
_knowledge_lock = threading.Lock()
_KNOWLEDGE_CACHE_MAX = 256


def _knowledge(agent: AIAgent) -> tuple[tuple[str, str], ...]:
    key = (agent.pk, agent.updated_at.isoformat())
    cached = _knowledge_cache.get(key)
    if cached is None:
        cached = tuple(KnowledgeEntry.objects.filter(agent=agent).values_list("question", "answer"))
        with _knowledge_lock:
            if len(_knowledge_cache) >= _KNOWLEDGE_CACHE_MAX:
                _knowledge_cache.clear()
            _knowledge_cache[key] = cached
    return cached


# AgentConfig's fields that are the AIAgent row's fields of the same name (tests/conversations/test_agent_config.py
# checks that each one exists on the model); `knowledge` is the agent's KnowledgeEntry rows instead.
_ROW_FIELDS = tuple(field.name for field in dataclasses.fields(AgentConfig) if field.name != "knowledge")


def agent_config(*, agent: AIAgent) -> AgentConfig:
    """The agent's snapshot: its row's fields read off by name, and its knowledge when its provider uses it."""
    return AgentConfig(
        **{name: getattr(agent, name) for name in _ROW_FIELDS},
        knowledge=_knowledge(agent) if provider_uses_knowledge(agent.provider) else (),
    )
