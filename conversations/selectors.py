import dataclasses
import threading
from dataclasses import replace
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connection
from django.db.models import F, OuterRef, Q, QuerySet, Subquery

from channels_app.models import AgentTool, AIAgent
from channels_app.validators import BUILTIN_ACTIONS
from config.statements import Columns, columns, quote
from contacts.models import Contact
from conversations.agents.base import AgentConfig, ToolSpec, provider_has
from conversations.models import Conversation, MediaAsset, Message

_CONTACT_ROW = (
    "id",
    "name",
    "conversation_id",
    "conversation_created_at",
    "conversation_agent_id",
    "conversation_last_message_at",
    "attributes",
    "conversation_agent_transferred",
)


def contact_with_active_conversation(
    *, workspace_id: str, channel_id: str, identifier_key: str
) -> dict[str, Any] | None:
    """The contact whose normalised identifier is `identifier_key` (contacts.identity) and its active
    conversation on the channel, in one indexed query.

    Returns None for an unknown contact; `conversation_id` is None when the contact has no active
    conversation on this channel.

    The conversation is a LATERAL probe of the (channel, contact) index of active conversations,
    whatever the planner's statistics say: as a plain join, a freshly loaded table's statistics (one active
    conversation per channel) made it scan all of the channel's active conversations for every message.
    """
    with connection.cursor() as cursor:
        cursor.execute(_contact_sql(), [channel_id, Conversation.Status.ACTIVE, workspace_id, identifier_key])
        found = cursor.fetchone()
    return dict(zip(_CONTACT_ROW, found, strict=True)) if found is not None else None


@cache
def _contact_sql() -> str:
    contact, conversation = Contact._meta.db_table, Conversation._meta.db_table
    return (
        "SELECT c.id, c.name, v.id, v.created_at, v.agent_id, v.last_message_at, c.attributes, v.agent_transferred "
        f"FROM {contact} c LEFT JOIN LATERAL (SELECT id, created_at, agent_id, last_message_at, agent_transferred "
        f"FROM {conversation} "
        "WHERE channel_id = %s AND contact_id = c.id AND status = %s LIMIT 1) v ON TRUE "
        "WHERE c.workspace_id = %s AND c.identifier_key = %s"
    )


_WINDOW_MESSAGE = (
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
)
# As media_asset__file, media_asset__sha256, media_asset__text: the cached file, and a document's text or an
# audio's transcription, which later turns show the agent again (conversations.services.history_build).
_WINDOW_ASSET = ("file", "sha256", "text")


@cache
def history_window_sql() -> tuple[str, Columns, Columns]:
    """The last `limit` messages of the conversation up to position `seq`, newest first; parameters
    (conversation id, seq, limit).

    Reads the (conversation, seq, part) unique index backwards and stops after `limit` rows: its cost does
    not grow with the conversation's length. A media message's cached file (name and hash) comes along
    through a left join on the asset's primary key, one index probe per row of the window. Written by hand
    (config/statements.py): the ORM's compiler cost more CPU than the query, on every message.
    """
    message, asset = columns(Message, "m", _WINDOW_MESSAGE), columns(MediaAsset, "a", _WINDOW_ASSET)
    sql = (
        f"SELECT {message.sql}, {asset.sql} FROM {quote(Message._meta.db_table)} m "
        f"LEFT JOIN {quote(MediaAsset._meta.db_table)} a ON a.{quote('id')} = m.{quote('media_asset_id')} "
        f"WHERE m.{quote('conversation_id')} = %s AND m.{quote('seq')} <= %s "
        f"ORDER BY m.{quote('seq')} DESC, m.{quote('part')} DESC LIMIT %s"
    )
    return sql, message, asset


def history_window(*, conversation_id: str, seq: int, limit: int) -> list[dict[str, Any]]:
    """`history_window_sql`, read: one query, each row a dict of the message's fields and the asset's
    `media_asset__file`, `media_asset__sha256` and `media_asset__text`."""
    sql, message, asset = history_window_sql()
    names = (*_WINDOW_MESSAGE, *(f"media_asset__{name}" for name in _WINDOW_ASSET))
    with connection.cursor() as cursor:
        cursor.execute(sql, [conversation_id, seq, limit])
        rows = cursor.fetchall()
    split = len(message)
    return [dict(zip(names, [*message.values(row[:split]), *asset.values(row[split:])], strict=True)) for row in rows]


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


# Tools per (agent, updated_at), per process: saving or deleting any of the agent's tools moves its `updated_at`
# (channels_app/models.py, agent_tool_changed), which the channel query reads with the agent, so a change is
# seen at the next message on every node without a query of its own.
_tools_cache: dict[tuple[str, str], tuple[ToolSpec, ...]] = {}
_tools_lock = threading.Lock()
_TOOLS_CACHE_MAX = 256


def _tools(agent: AIAgent) -> tuple[ToolSpec, ...]:
    key = (agent.pk, agent.updated_at.isoformat())
    cached = _tools_cache.get(key)
    if cached is None:
        cached = tuple(
            ToolSpec(**{name: getattr(tool, name) for name in _TOOL_FIELDS})
            for tool in AgentTool.objects.filter(agent=agent).order_by("name")
        )
        cached = tuple(replace(tool, secret_encrypted=bytes(tool.secret_encrypted)) for tool in cached)
        with _tools_lock:
            if len(_tools_cache) >= _TOOLS_CACHE_MAX:
                _tools_cache.clear()
            _tools_cache[key] = cached
    return cached


_TOOL_FIELDS = tuple(field.name for field in dataclasses.fields(ToolSpec))
# AgentConfig's fields that are the AIAgent row's fields of the same name (tests/conversations/test_agent_config.py
# checks that each one exists on the model); `knowledge` is the message's passages, found in the think phase;
# the others are read from the agent's related rows.
RELATED_FIELDS = ("knowledge", "tools", "transfer_targets")
_ROW_FIELDS = tuple(field.name for field in dataclasses.fields(AgentConfig) if field.name not in RELATED_FIELDS)


def agent_config(*, agent: AIAgent) -> AgentConfig:
    """The agent's snapshot: its row's fields read off by name; its tools and, with transfer_to_agent
    enabled, the agents it may transfer to, when its provider calls tools (an agent with neither costs no
    query). Its passages (`knowledge`) are found in the think phase (knowledge/retrieval.py)."""
    row = {name: getattr(agent, name) for name in _ROW_FIELDS}
    acting = provider_has(agent.provider, "uses_tools")
    row["actions"] = tuple(name for name in (agent.actions or ()) if name in BUILTIN_ACTIONS) if acting else ()
    targets: tuple[tuple[str, str], ...] = ()
    if "transfer_to_agent" in row["actions"]:
        targets = tuple(
            AIAgent.objects.filter(workspace_id=agent.workspace_id).exclude(pk=agent.pk).values_list("id", "name")
        )
    return AgentConfig(
        **row,
        tools=_tools(agent) if acting and agent.has_tools else (),
        transfer_targets=targets,
    )


# --- the read API (api/edge/read_views.py) --------------------------------------------------------------------

CONVERSATION_FIELDS = (
    "id",
    "status",
    "channel_id",
    "contact_id",
    "agent_id",
    "created_at",
    "last_message_at",
    "closed_at",
    "close_reason",
    "labels",
)
MESSAGE_FIELDS = (
    "id",
    "seq",
    "part",
    "direction",
    "type",
    "content",
    "status",
    "error_code",
    "metadata",
    "actions",
    "created_at",
)


def _conversation_rows(queryset: QuerySet[Conversation, Any]) -> QuerySet[Conversation, dict[str, Any]]:
    """Each conversation with what its API object shows: the agent's name and the channel's team (two
    joins by primary key)."""
    return queryset.values(
        *CONVERSATION_FIELDS,
        agent_name=F("agent__name"),
        team_id=F("channel__team_id"),
        team_name=F("channel__team__name"),
    )


def conversation_get(*, workspace_id: str, conversation_id: str) -> dict[str, Any] | None:
    """The workspace's conversation (None for an unknown id or another workspace's). One query."""
    return _conversation_rows(Conversation.objects.filter(pk=conversation_id, workspace_id=workspace_id)).first()


def conversation_exists(*, workspace_id: str, conversation_id: str) -> bool:
    return Conversation.objects.filter(pk=conversation_id, workspace_id=workspace_id).exists()


def conversation_list(
    *,
    workspace_id: str,
    channel_id: str | None,
    contact_id: str | None,
    status: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
    label: str | None = None,
    by_creation: bool = False,
    after_id: str | None = None,
) -> list[dict[str, Any]]:
    """The workspace's conversations, newest `last_message_at` first (ties by id), after the key `after`
    (the last row of the previous page). One query on conversation_ws_recent, conversation_channel_recent
    or conversation_contact_recent: the `>=`-bound on the key is the index range's start, so a page deep in
    the list reads as few rows as the first. With `by_creation`, newest created first, after the id
    `after_id`: a key that does not move while the client pages (a conversation's last message does)."""
    queryset = Conversation.objects.filter(workspace_id=workspace_id, last_message_at__isnull=False)
    if channel_id is not None:
        queryset = queryset.filter(channel_id=channel_id)
    if contact_id is not None:
        queryset = queryset.filter(contact_id=contact_id)
    if status is not None:
        queryset = queryset.filter(status=status)
    if label is not None:
        queryset = queryset.filter(labels__contains=[label])  # conversation_labels (GIN, jsonb @>)
    if by_creation:
        # newest created first: by id (time-ordered, conversations/models.py), a key that never moves
        if after_id is not None:
            queryset = queryset.filter(id__lt=after_id)
        return list(_conversation_rows(queryset.order_by("-id"))[:limit])
    if after is not None:
        at, last_id = after
        queryset = queryset.filter(last_message_at__lte=at).filter(Q(last_message_at__lt=at) | Q(id__lt=last_id))
    return list(_conversation_rows(queryset.order_by("-last_message_at", "-id"))[:limit])


def message_list(*, conversation_id: str, after: tuple[int, int] | None, limit: int) -> list[dict[str, Any]]:
    """A conversation's messages oldest first, by (seq, part), after the position `after`. One query on the
    (conversation, seq, part) unique index: `seq >= s` bounds the range scan, so the page at position
    1,000,000 reads as few index entries as the first page."""
    queryset = Message.objects.filter(conversation_id=conversation_id)
    if after is not None:
        seq, part = after
        queryset = queryset.filter(seq__gte=seq).filter(Q(seq__gt=seq) | Q(part__gt=part))
    return list(queryset.order_by("seq", "part").values(*MESSAGE_FIELDS)[:limit])


def message_get(*, workspace_id: str, message_id: str) -> dict[str, Any] | None:
    """The workspace's message with its stored 200 body (`result`, bytes or None). One query (primary key,
    then the conversation's, for the workspace)."""
    return (
        Message.objects.filter(pk=message_id, conversation__workspace_id=workspace_id)
        .values(*MESSAGE_FIELDS, "result")
        .first()
    )


def contact_rows(*, queryset: QuerySet[Contact, Any], limit: int) -> list[dict[str, Any]]:
    """The contacts of `queryset` (contacts.selectors) as the API shows them, with the newest
    `last_message_at` of their conversations: one probe of conversation_contact_recent per contact, all in
    one query."""
    latest = (
        Conversation.objects.filter(contact_id=OuterRef("pk"), last_message_at__isnull=False)
        .order_by("-last_message_at", "-id")
        .values("last_message_at")[:1]
    )
    return list(
        queryset.annotate(last_message_at=Subquery(latest)).values(
            "id", "identifier", "name", "attributes", "created_at", "last_message_at"
        )[:limit]
    )


# --- bursts (docs/architecture.md, "Bursts") -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BurstState:
    """Where a message of a conversation in the latest burst mode stands (`burst_state`)."""

    last_seq: int  # the conversation's newest inbound message's position: above the message's, it is superseded
    newest_at: datetime  # when the newest inbound message was accepted (the window restarts from it)
    burst_start: datetime  # when the burst's first message was accepted (the window's cap counts from it)
    final_pending: bool  # an earlier message answers its burst whatever comes after, and is still being answered


@cache
def _burst_state_sql() -> str:
    message, conversation = quote(Message._meta.db_table), quote(Conversation._meta.db_table)
    # The burst: the inbound messages after the last one that ended a burst (answered, failed, or one that
    # answers its burst whatever comes after: `burst_final`), up to the message. Each sub-query reads the
    # (conversation, seq, part) index from the message backwards.
    boundary = (
        f"SELECT b.seq FROM {message} b WHERE b.conversation_id = c.id AND b.seq < %(seq)s AND b.part = 0 "
        "AND (b.status NOT IN (%(pending)s, %(superseded)s) OR b.burst_final) ORDER BY b.seq DESC LIMIT 1"
    )
    return (
        "SELECT c.last_seq, "
        f"(SELECT n.created_at FROM {message} n WHERE n.conversation_id = c.id AND n.seq = c.last_seq AND n.part = 0), "
        f"(SELECT min(f.created_at) FROM {message} f WHERE f.conversation_id = c.id AND f.part = 0 "
        f"AND f.seq <= %(seq)s AND f.seq > COALESCE(({boundary}), 0)), "
        f"EXISTS (SELECT 1 FROM {message} e WHERE e.conversation_id = c.id AND e.seq < %(seq)s AND e.part = 0 "
        "AND e.burst_final AND e.status = %(pending)s AND e.lease_until > %(now)s) "
        f"FROM {conversation} c WHERE c.id = %(conversation)s"
    )


def burst_state(*, conversation_id: str, seq: int, now: datetime) -> BurstState:
    """The burst of the message at `seq` as stored now (one query): whether a newer message arrived, when the
    newest and the first message of the burst were accepted, and whether an earlier message that answers its
    burst whatever comes after (`Message.burst_final`) is still being answered (its lease alive)."""
    params: dict[str, Any] = {
        "conversation": conversation_id,
        "seq": seq,
        "now": now,
        "pending": Message.Status.PENDING,
        "superseded": Message.Status.SUPERSEDED,
    }
    with connection.cursor() as cursor:
        cursor.execute(_burst_state_sql(), params)
        row = cursor.fetchone()
    assert row is not None, "a message's conversation is never deleted while it is answered"
    last_seq, newest_at, burst_start, final_pending = row
    # The newest message may be newer than this statement's snapshot of the messages (accepted meanwhile): then
    # it is at least as new as the message's own acceptance, which the caller compares it with.
    return BurstState(
        last_seq=last_seq,
        newest_at=newest_at or now,
        burst_start=burst_start or now,
        final_pending=final_pending,
    )


def inbound_newest(*, conversation_id: str) -> str:
    """The id of the conversation's newest inbound message (the one at its `last_seq`)."""
    return (
        Message.objects.filter(conversation_id=conversation_id, part=0)
        .order_by("-seq")
        .values_list("id", flat=True)[:1]
        .get()
    )
