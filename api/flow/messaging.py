"""The messages endpoint's service: a contact's message in, the agent's replies out, in three phases.

1. Accept (one short transaction): claim the idempotency key, load the channel, store the inbound message,
   reserve the credits. Commit and give the connection back to the pool.
2. Think (no transaction, no connection held): fetch and check the message's media, wait for the
   conversation's turn, build the history, call the agent.
3. Record (one short transaction): store the replies, settle the credits, store the idempotent response.
A failed agent call keeps the inbound message, releases the credits and frees the idempotency key.
"""

import contextvars
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from analytics.stats import message_stats_failed
from api.flow import writes
from api.flow.actions import ActionRun
from api.flow.idempotency import (
    Claim,
    Replay,
    idempotency_attach_message,
    idempotency_claim,
    idempotency_hold,
    idempotency_lock_extend,
    idempotency_owned,
    idempotency_release,
)
from api.maintenance.conversations import conversations_closed_announce
from api.serializers import (
    AiMessageView,
    ConversationView,
    MessageResult,
    MessageResultSerializer,
    SupersededResultSerializer,
    UsageView,
    represent,
)
from billing.credits import (
    credits_charge,
    credits_cost,
    credits_estimate,
    credits_release,
    credits_reserve,
)
from channels_app.models import BURST_WINDOW_MAX_MS, AIAgent, Channel, Workspace
from channels_app.selectors import channel_get_for_workspace
from config.db import connection_release
from config.errors import ApplicationError
from config.exception_handler import to_application_error
from config.logs import log_bind
from config.metrics import agent_latency_observe, credits_spent_observe
from conversations.agents.base import (
    AgentConfig,
    AgentReply,
    ContactContext,
    HistoryItem,
    get_backend,
    provider_has,
    reply_streamed,
)
from conversations.media.pipeline import history_media_load, media_prepare
from conversations.models import Conversation, Message
from conversations.selectors import agent_config, burst_state, inbound_newest
from conversations.services import (
    StoredReplies,
    TurnNotReady,
    conversation_close,
    history_build,
    inbound_message_fail,
    inbound_message_lease_extend,
    inbound_message_lock_pending,
    inbound_message_resume,
)
from knowledge.retrieval import knowledge_select, knowledge_sources
from webhooks.services import message_failed_emit, message_replied_emit


class ConversationBusy(ApplicationError):
    code = "conversation_busy"
    status_code = 409
    default_message = (
        "An earlier message of this conversation is still being answered. Retry after the time given in Retry-After."
    )


logger = structlog.get_logger(__name__)

_ACCEPT_ATTEMPTS = 3  # a creation race loses at most once per unique row (contact, conversation, key)
# What a lease holds beyond the media download and the agent's deadline: a wait for a pooled connection
# (up to DB_POOL_TIMEOUT, 10 s), storing the media file, the record phase, and clocks of different machines
# a little apart; LEASE_RENEW_SECONDS of it may already be used when the agent is called (`_lease_keep`).
LEASE_MARGIN_SECONDS = 30.0
# A request waiting for its turn renews its lease once this much of it is used: at most two UPDATEs (the
# message, the idempotency key) per waiting request per 10 s, none on a request that does not wait.
LEASE_RENEW_SECONDS = 10.0
# Seconds between looks at an earlier message's progress: a waiting message costs one indexed query per look,
# and a burst of N messages to one conversation is answered in about N x (agent time + this pause).
_TURN_POLL_FIRST, _TURN_POLL_MAX = 0.02, 0.2


@dataclass(frozen=True)
class InboundRequest:
    """A contact's message as the view validated it (api.serializers.InboundMessageSerializer's
    `validated_data`), with the workspace of the request's key, its idempotency key and its fingerprint."""

    workspace: Workspace
    channel_id: str
    contact_identifier: str
    contact_name: str  # "" when none was sent
    type: str
    content: dict[str, Any]
    metadata: dict[str, str]  # {} when none was sent
    idempotency_key: str | None
    fingerprint: str


@dataclass
class PostResult:
    status: int
    body: bytes
    replayed: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    events: Iterator[bytes] | None = None  # a streamed answer's Server-Sent Events (api/flow/streaming.py)


class AnsweredElsewhere(Exception):
    """Another run of the same answer (a task delivered twice, or one that took over a dead worker's lease)
    recorded or failed the message first: this run stores, settles and emits nothing."""


@dataclass
class Accepted:
    workspace_id: str
    channel_id: str
    team_id: str | None
    team_name: str | None
    agent: AgentConfig
    contact_id: str
    conversation_id: str
    conversation_created_at: datetime
    conversation_status: str
    conversation_closed_at: datetime | None
    conversation_close_reason: str | None
    message: Message
    reserved: int
    claim: Claim | None
    lease_seconds: float  # see `lease_seconds`
    lease_until: datetime  # the message's lease (and its key's lock) as this request last set it
    # True for an answer run by a task (api/flow/later.py): more than one run may hold the same message and key
    # (a redelivered task carries the same claim), so the record and failure phases first check, under the
    # message row's lock, that the message still waits for its answer.
    exclusive: bool = False
    agent_seconds: float | None = None  # set by the think phase, for the dashboard's latency (backoffice)
    # The documents whose passages the agent was given, best first (the 200 body's `sources`): think phase.
    sources: list[dict[str, str | None]] = field(default_factory=list)
    # What the agent is told about the contact (README "Contact attributes and labels").
    contact_name: str = ""
    contact_attributes: dict[str, str] = field(default_factory=dict)
    actions: ActionRun | None = None  # set by the think phase for an agent with actions (api/flow/actions.py)
    # The channel's burst mode and window (README "Bursts of short messages"; `_burst_turn`).
    burst_mode: str = Channel.BurstMode.QUEUE
    burst_window_ms: int = 0

    @property
    def latest(self) -> bool:
        """Whether a newer message of the conversation supersedes this one: the latest burst mode, unless
        this message answers its burst whatever comes after (`Message.burst_final`)."""
        return self.burst_mode == Channel.BurstMode.LATEST and not self.message.burst_final


def render(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def lease_seconds(*, agent: AgentConfig) -> float:
    """How long a request's lease lasts: its conversation turn (`Message.lease_until`, which later messages
    of the conversation wait on) and its idempotency key (`IdempotencyRecord.locked_until`).

    A live request must never lose its lease: a later message would take it for dead, skip it and be
    answered before it, without its reply in the history. A dead one (its process killed) must not block
    its conversation and key for long. So the lease covers the longest stretch a request spends without
    coming back to the database, and the request renews it whenever it is back there anyway (`_lease_keep`):

    - accept to the first look at the turn: the media download (MEDIA_DOWNLOAD_TIMEOUT_SECONDS, a deadline
      for the whole download), a document's text (MEDIA_EXTRACT_TIMEOUT_SECONDS) or an audio's
      transcription (the agent's `timeout_seconds`, a deadline for the whole call, see
      conversations/agents/openai_agent.py);
    - the wait for the turn: as long as the earlier messages take (up to CONVERSATION_TURN_WAIT_SECONDS);
      renewed at the looks, every LEASE_RENEW_SECONDS;
    - the last look to the record phase: the agent call (its `timeout_seconds` again).

    Hence media download + text extraction + the agent's timeout + LEASE_MARGIN_SECONDS, and never less than
    PROCESSING_LEASE_SECONDS. Not renewed during the media step and the agent call: that would take a
    timer and a database connection for each request in flight, and both steps end at their deadlines.
    A lease that also covered the turn wait would need no renewal at all, but would keep a dead request's
    conversation blocked for the turn wait as well (and the turn wait is per message, so a queue of them
    could outlast even that). The clean-up (api/maintenance/cleanup.py) takes a message as abandoned only well
    after its lease ran out, so it never touches a live request either.
    """
    return max(
        float(settings.PROCESSING_LEASE_SECONDS),
        float(settings.MEDIA_DOWNLOAD_TIMEOUT_SECONDS)
        + float(settings.MEDIA_EXTRACT_TIMEOUT_SECONDS)
        + agent.timeout_seconds
        + LEASE_MARGIN_SECONDS,
    )


def message_answer(
    accepted: Accepted,
    *,
    on_agent_start: Callable[[], None] | None = None,
    on_delta: Callable[[str], None] | None = None,
    on_action: Callable[[dict[str, Any]], None] | None = None,
) -> PostResult:
    """Think and record for an accepted message (the module's docstring), on the failure path `_fail`. The
    one code path of every mode: the request's own (synchronous), a task's (api/flow/later.py) and a stream's
    (api/flow/streaming.py), which passes `on_agent_start` (called once the media and the turn are ready, just
    before the agent) and `on_delta` (each piece of the agent's text as it arrives)."""
    try:
        return _record(
            accepted, _think(accepted, on_agent_start=on_agent_start, on_delta=on_delta, on_action=on_action)
        )
    except _Superseded:
        superseded = _supersede_alone(accepted)
        assert superseded is not None  # only `only_if_newer` gives None
        return superseded
    except AnsweredElsewhere:
        raise
    except Exception as error:
        # The latest burst mode: a message that failed after a newer one arrived is superseded, not failed
        # (the newer one answers it); a later failure of that one is its own.
        superseded = _supersede_alone(accepted, only_if_newer=True) if accepted.latest else None
        if superseded is not None:
            return superseded
        _fail(accepted, error)
        raise


def processing_result(
    *, message_id: str, contact_id: str | None = None, conversation_id: str | None = None
) -> PostResult:
    """The 202 of the asynchronous mode: the message's ids, where its result will be (`Location`)."""
    if contact_id is None or conversation_id is None:
        conversation_id, contact_id = (
            Message.objects.filter(pk=message_id).values_list("conversation_id", "conversation__contact_id").get()
        )
    body = {
        "success": True,
        "status": "PROCESSING",
        "contactId": contact_id,
        "conversationId": conversation_id,
        "messageId": message_id,
    }
    return PostResult(
        status=202,
        body=render(body),
        headers={"Location": f"/api/v1/messages/{message_id}", "Preference-Applied": "respond-async"},
    )


def _accept(inbound: InboundRequest) -> Accepted | Replay:
    for attempt in range(1, _ACCEPT_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                return _accept_once(inbound)
        except IntegrityError:
            # A concurrent request created the same contact, conversation or key first; now it is visible.
            if attempt == _ACCEPT_ATTEMPTS:
                raise
        except writes.Aborted as aborted:
            # Rolled back: the workspace's credits ran short, or the conversation was closed or erased after
            # the lookup (a closed one: run again, the message opens a new conversation).
            error = aborted.error()
            if error is not None:
                raise error from None
            if attempt == _ACCEPT_ATTEMPTS:
                raise ConversationBusy(headers={"Retry-After": "1"}) from None
    raise AssertionError("unreachable")


def _accept_once(inbound: InboundRequest) -> Accepted | Replay:
    workspace = inbound.workspace
    now = timezone.now()
    claim = None
    if inbound.idempotency_key is not None:
        # Locked for PROCESSING_LEASE_SECONDS until the agent is known; then for the request's lease.
        claimed = idempotency_claim(
            workspace_id=workspace.pk, key=inbound.idempotency_key, fingerprint=inbound.fingerprint, now=now
        )
        if isinstance(claimed, Replay):
            return claimed
        claim = claimed
    channel = channel_get_for_workspace(channel_id=inbound.channel_id, workspace_id=workspace.pk)
    assert channel.agent is not None  # channel_get_for_workspace refuses a channel without an agent
    agent = agent_config(agent=channel.agent)
    lease = lease_seconds(agent=agent)
    lease_until = now + timedelta(seconds=lease)
    if claim is not None and claim.message_id is not None:
        # An earlier attempt stored the message and failed (or died): answer that message, not a new one.
        message = inbound_message_resume(message_id=claim.message_id, lease_until=lease_until)
        if lease > settings.PROCESSING_LEASE_SECONDS:  # else the claim already locked the key until then
            idempotency_attach_message(claim=claim, message_id=message.pk, locked_until=lease_until)
        conversation = message.conversation
        reserved = message.credits_reserved  # still held if the earlier attempt died mid-way
        if reserved == 0:
            reserved = credits_estimate(agent=agent)
            credits_reserve(workspace_id=workspace.pk, amount=reserved)
            Message.objects.filter(pk=message.pk).update(credits_reserved=reserved)
            message.credits_reserved = reserved
        contact_id, conversation_id, conversation_created_at = (
            conversation.contact_id,
            conversation.pk,
            conversation.created_at,
        )
        status, closed_at, close_reason = conversation.status, conversation.closed_at, conversation.close_reason or None
        contact = dict(
            contact_name=conversation.contact.name,
            contact_attributes=conversation.contact.attributes,
            transferred_agent_id=conversation.agent_id if conversation.agent_transferred else None,
        )
    else:
        reserved = credits_estimate(agent=agent)
        store: dict[str, Any] = dict(
            workspace_id=workspace.pk,
            channel_id=channel.pk,
            agent_id=agent.id,
            inactivity_timeout_seconds=channel.inactivity_timeout_seconds,
            contact_identifier=inbound.contact_identifier,
            contact_name=inbound.contact_name,
            type=inbound.type,
            content=inbound.content,
            metadata=inbound.metadata,
            now=now,
            lease_until=lease_until,
            credits_reserved=reserved,
        )
        stored = writes.inbound_accept(**store, claim=claim)
        if stored.closed_idle_id is not None:
            # The contact's conversation had timed out: closed now, with its event, in this transaction.
            conversations_closed_announce(conversation_ids=[stored.closed_idle_id])
        message = stored.message
        contact = dict(
            contact_name=stored.contact_name,
            contact_attributes=stored.contact_attributes,
            transferred_agent_id=stored.transferred_agent_id,
        )
        contact_id, conversation_id, conversation_created_at = (
            stored.contact_id,
            stored.conversation_id,
            stored.conversation_created_at,
        )
        status, closed_at, close_reason = Conversation.Status.ACTIVE, None, None
    transferred = contact.pop("transferred_agent_id")
    if transferred is not None and transferred != agent.id:
        # A transfer_to_agent gave the conversation another agent of the workspace: it answers, and the
        # reservation covers its price too.
        other = AIAgent.objects.filter(pk=transferred, workspace_id=workspace.pk).first()
        if other is not None:
            agent = agent_config(agent=other)
            more = credits_estimate(agent=agent) - reserved
            if more > 0:
                credits_reserve(workspace_id=workspace.pk, amount=more)
                reserved += more
                Message.objects.filter(pk=message.pk).update(credits_reserved=reserved)
                message.credits_reserved = reserved
    return Accepted(
        workspace_id=workspace.pk,
        channel_id=channel.pk,
        team_id=channel.team_id,
        team_name=channel.team.name if channel.team is not None else None,
        agent=agent,
        contact_id=contact_id,
        conversation_id=conversation_id,
        conversation_created_at=conversation_created_at,
        conversation_status=status,
        conversation_closed_at=closed_at,
        conversation_close_reason=close_reason,
        message=message,
        reserved=reserved,
        claim=claim,
        lease_seconds=lease,
        lease_until=lease_until,
        burst_mode=channel.burst_mode,
        burst_window_ms=channel.burst_window_ms,
        **contact,
    )


def _history(accepted: Accepted, *, media_chars: int = 0) -> list[HistoryItem]:
    """Wait until every earlier message of the conversation is answered, then read the history, within the
    agent's character budget less `media_chars` (the new message's document text or transcription). The
    connection goes back to the pool between looks, so a waiting request holds none; each look keeps the
    request's lease (`_lease_keep`), so that later messages keep waiting for this one."""
    deadline = time.monotonic() + settings.CONVERSATION_TURN_WAIT_SECONDS
    pause = _TURN_POLL_FIRST
    while True:
        now = timezone.now()
        try:
            history = history_build(
                message=accepted.message,
                max_messages=accepted.agent.history_max_messages,
                max_chars=accepted.agent.history_max_chars - media_chars,
                now=now,
            )
        except TurnNotReady:
            _lease_keep(accepted, now=now)
            connection_release()
            if time.monotonic() + pause > deadline:
                raise ConversationBusy(
                    "An earlier message of this conversation is still being answered. Retry this message "
                    "with the same idempotency key in a few seconds.",
                    details={"conversationId": accepted.conversation_id},
                    headers={"Retry-After": "5"},
                ) from None
            time.sleep(pause)
            pause = min(pause * 2, _TURN_POLL_MAX)
        else:
            _lease_keep(accepted, now=now)  # the agent call ahead gets (nearly) a whole lease
            return history


def _lease_keep(accepted: Accepted, *, now: datetime) -> None:
    """Renew the request's lease (the message's turn and its idempotency key) once LEASE_RENEW_SECONDS of
    it are used; a request that does not wait for its turn never writes here. Conditional UPDATEs: a
    message no longer pending, or a key another attempt took over, is left alone (the record phase then
    finds out, in `idempotency_hold`)."""
    if accepted.lease_until - now > timedelta(seconds=accepted.lease_seconds - LEASE_RENEW_SECONDS):
        return
    until = now + timedelta(seconds=accepted.lease_seconds)
    inbound_message_lease_extend(message_id=accepted.message.pk, lease_until=until)
    if accepted.claim is not None:
        idempotency_lock_extend(claim=accepted.claim, locked_until=until)
    accepted.lease_until = until


def _think(
    accepted: Accepted,
    *,
    on_agent_start: Callable[[], None] | None = None,
    on_delta: Callable[[str], None] | None = None,
    on_action: Callable[[dict[str, Any]], None] | None = None,
) -> AgentReply:
    # First: an agent whose provider is not configured fails before any download or wait.
    backend = get_backend(accepted.agent.provider)
    media = None
    if accepted.message.type != Message.Type.TEXT:
        # Before the turn's wait: a refused or unreachable file fails the message without waiting.
        media = media_prepare(message=accepted.message, agent=accepted.agent, workspace_id=accepted.workspace_id)
    media_chars = len(media.text) if media is not None else 0
    if accepted.burst_mode == Channel.BurstMode.LATEST:
        history = _burst_turn(accepted, media_chars=media_chars)
    else:
        history = _history(accepted, media_chars=media_chars)
    if media is not None:
        history[-1] = replace(history[-1], media=media)
    agent = accepted.agent
    if agent.knowledge_passages:  # an agent without passages costs no statement (tests/api/test_query_counts.py)
        agent = replace(agent, knowledge=knowledge_select(agent=agent, history=history))
        accepted.sources = knowledge_sources(agent.knowledge)
    history[-1] = replace(
        history[-1], contact=ContactContext(name=accepted.contact_name, attributes=accepted.contact_attributes)
    )
    connection_release()
    history = history_media_load(history=history, agent=accepted.agent)
    if on_agent_start is not None:
        on_agent_start()
    tools: dict[str, Any] = {}
    if accepted.agent.acts and provider_has(accepted.agent.provider, "uses_tools"):
        accepted.actions = ActionRun(
            agent=accepted.agent,
            message_id=accepted.message.pk,
            conversation_id=accepted.conversation_id,
            contact_id=accepted.contact_id,
            contact_attributes=accepted.contact_attributes,
            on_action=on_action,
        )
        tools["actions"] = accepted.actions
    started = time.monotonic()

    def call() -> AgentReply:
        if on_delta is None:
            return backend.reply(agent=agent, history=history, **tools)
        return reply_streamed(backend, agent=agent, history=history, on_delta=on_delta, tools=tools)

    reply = _call_watched(accepted, call) if accepted.latest else call()
    seconds = round(time.monotonic() - started, 3)
    log_bind(agent_seconds=seconds)  # also on the request's "request_finished" line
    accepted.agent_seconds = seconds
    agent_latency_observe(provider=accepted.agent.provider, seconds=seconds)
    logger.info("agent replied", agent_id=accepted.agent.id, parts=len(reply.texts))
    return reply


def _fail(accepted: Accepted, error: Exception) -> None:
    # As the client is answered (config/exception_handler.py): a connection that broke is 503
    # database_unavailable there, so it is on the message and in its message.failed event too.
    known = to_application_error(error)
    code = known.code if known is not None else "internal_error"
    with transaction.atomic():
        if accepted.exclusive and not inbound_message_lock_pending(message_id=accepted.message.pk):
            return  # another run of this answer recorded or failed it first
        if accepted.claim is not None and not idempotency_release(claim=accepted.claim):
            return  # a retry took the key over, with the message and its reservation: they are not ours
        released = inbound_message_fail(message_id=accepted.message.pk, error_code=code, reserved=accepted.reserved)
        credits_release(workspace_id=accepted.workspace_id, amount=released)
        message_failed_emit(
            channel_id=accepted.channel_id,
            contact_id=accepted.contact_id,
            conversation_id=accepted.conversation_id,
            message_id=accepted.message.pk,
            error=known or error,
        )
        message_stats_failed(message_ids=[accepted.message.pk], error_code=code, at=timezone.now())


_RESERVED_CONSTRAINT = "workspace_reserved_not_negative"  # channels_app.models.Workspace's check constraint


class _ReservationGone(Exception):
    """The clean-up released the message's reservation while the agent worked (api.flow.messaging._record)."""


def _record(accepted: Accepted, reply: AgentReply) -> PostResult:
    now = timezone.now()
    cost = credits_cost(agent=accepted.agent, input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)
    try:
        with transaction.atomic():
            body, charged = _record_once(accepted, reply, now=now, cost=cost, reserved=accepted.reserved)
    except (_ReservationGone, IntegrityError) as error:
        # Rare: the clean-up judged this request dead and gave the reservation back. The settlement then
        # took it a second time (the workspace's reserved credits went below zero: its check constraint) or
        # the UPDATE that marks the message answered found the reservation gone. Either way the transaction
        # rolled back; record again, from its start, as an answer that charges nothing.
        if isinstance(error, IntegrityError) and _RESERVED_CONSTRAINT not in str(error):
            raise
        with transaction.atomic():
            body, charged = _record_once(accepted, reply, now=now, cost=cost, reserved=0)
    # Back to the pool now, not at the end of the request: rendering and logging need no connection, and
    # under load every moment a waiting request holds one is a moment another request waits for it.
    connection_release()
    credits_spent_observe(charged)
    return PostResult(status=200, body=body)


def _conversation_view(
    accepted: Accepted,
    *,
    agent: tuple[str, str],
    status: str,
    last_message_at: datetime,
    closed_at: datetime | None,
    close_reason: str | None,
    labels: tuple[str, ...],
) -> ConversationView:
    """The 200 body's `conversation` as the record phase (or a supersession) left it: what the accept phase
    knew of it, and what the transaction at hand read or wrote (`agent` is its AI agent's id and name)."""
    return ConversationView(
        id=accepted.conversation_id,
        status=status,
        channel_id=accepted.channel_id,
        contact_id=accepted.contact_id,
        agent_id=agent[0],
        agent_name=agent[1],
        team_id=accepted.team_id,
        team_name=accepted.team_name,
        created_at=accepted.conversation_created_at,
        last_message_at=last_message_at,
        closed_at=closed_at,
        close_reason=close_reason,
        labels=labels,
    )


def _result(accepted: Accepted, reply: AgentReply, stored: StoredReplies, now: datetime, charged: int) -> MessageResult:
    """The 200 body's content, with `writes.BALANCE_PLACEHOLDER` as the balance, for the settlement to fill in."""
    agent_id, agent_name = accepted.agent.id, accepted.agent.name
    run = accepted.actions
    if run is not None and run.effects.transfer_to is not None:
        agent_id, agent_name = run.effects.transfer_to  # the conversation's agent from now on
    return MessageResult(
        contact_id=accepted.contact_id,
        conversation_id=accepted.conversation_id,
        message_id=accepted.message.pk,
        conversation=_conversation_view(
            accepted,
            agent=(agent_id, agent_name),
            status=stored.status,
            last_message_at=now,
            closed_at=stored.closed_at,
            close_reason=stored.close_reason,
            labels=stored.labels,
        ),
        ai_messages=[
            AiMessageView(
                id=part.pk,
                type=part.type,
                content=part.content,
                sender_name=accepted.agent.name,
                created_at=part.created_at,
            )
            for part in stored.messages
        ],
        usage=UsageView(
            credits=charged,
            balance=writes.BALANCE_PLACEHOLDER,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
        ),
        actions=tuple(run.actions) if run is not None else (),
        sources=accepted.sources,
    )


def _record_once(
    accepted: Accepted, reply: AgentReply, *, now: datetime, cost: int, reserved: int
) -> tuple[bytes, int]:
    """The record phase's statements, in the caller's transaction; returns (the 200 body, credits charged).
    The body is rendered before the UPDATE that marks the message answered, so that UPDATE stores it too
    (`Message.result`, for GET /api/v1/messages/{id}) at no statement of its own: everything it shows is
    known by then (reply ids and times are made in Python), but for the balance after the settlement, which
    the same statement writes into the body (`writes.inbound_settle_answer`)."""
    if accepted.claim is not None:
        idempotency_hold(claim=accepted.claim)  # first: a retry that took the key over records instead
    if accepted.exclusive and not inbound_message_lock_pending(message_id=accepted.message.pk):
        raise AnsweredElsewhere
    if accepted.latest:
        # The check in the record phase's transaction: a newer message accepted while the agent thought
        # supersedes this one, and the reply is discarded; one accepted after this transaction sees the reply.
        sets_attributes = accepted.actions is not None and bool(accepted.actions.effects.attributes)
        position = writes.burst_lock(
            message_id=accepted.message.pk,
            conversation_id=accepted.conversation_id,
            contact_id=accepted.contact_id if sets_attributes else None,  # the contact's row before the conversation's
        )
        if position.last_seq > accepted.message.seq:
            return _supersede(accepted, position), 0
    charge = credits_charge(cost=cost, reserved=reserved)
    run = accepted.actions
    # The replies first, with the turn's labels, transfer and attributes (api/flow/actions.py); the settlement
    # last, in the statement that commits (api/flow/writes.py): the workspace row, which every message of the
    # workspace locks, is held only while PostgreSQL runs that statement.
    stored, has_webhook = writes.replies_store(
        message=accepted.message,
        workspace_id=accepted.workspace_id,
        channel_id=accepted.channel_id,
        texts=reply.texts,
        charge=charge,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        agent_seconds=accepted.agent_seconds,
        now=now,
        contact_id=accepted.contact_id,
        effects=run.effects if run is not None else None,
    )
    if run is not None and run.effects.close:
        stored = _agent_close(accepted, stored, now=now)
    template = render(represent(MessageResultSerializer, _result(accepted, reply, stored, now, charge)))
    try:
        body = writes.inbound_settle_answer(
            message_id=accepted.message.pk,
            workspace_id=accepted.workspace_id,
            reserved=reserved,
            charge=charge,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            template=template,
            claim=accepted.claim,
            commit=writes.record_commits(has_webhook=has_webhook),
            now=now,
            actions=run.actions if run is not None else None,
        )
    except writes.Aborted:
        raise _ReservationGone from None
    if has_webhook:
        message_replied_emit(channel_id=accepted.channel_id, contact_id=accepted.contact_id, body=body)
    return body, charge


def _agent_close(accepted: Accepted, stored: StoredReplies, *, now: datetime) -> StoredReplies:
    """The agent's close_conversation, in the record phase's transaction after its replies: the close
    (closeReason "agent") with its `conversation.closed` event; a conversation closed meanwhile stays as it is."""
    if conversation_close(
        conversation_id=accepted.conversation_id,
        workspace_id=accepted.workspace_id,
        reason=Conversation.CloseReason.AGENT,
        now=now,
    ):
        conversations_closed_announce(conversation_ids=[accepted.conversation_id])
        return replace(
            stored, status=Conversation.Status.CLOSED, closed_at=now, close_reason=Conversation.CloseReason.AGENT
        )
    return stored


# --- bursts (README "Bursts of short messages"; docs/architecture.md, "Bursts") --------------------------------

# Seconds between looks at a burst while a message waits for its window (or for an earlier final message):
# a waiting request answers its superseded body within this much of the newer message's arrival, at one
# indexed query per look (the turn's wait looks as often at the most, `_TURN_POLL_MAX`).
_BURST_POLL_SECONDS = 0.2
_BURST_WINDOW_MAX = timedelta(milliseconds=BURST_WINDOW_MAX_MS)
# The longest pause between looks while the agent call of a message that may be superseded runs
# (`_call_watched`): a 10 s call costs about 12 looks.
_CALL_POLL_MAX_SECONDS = 1.0


class _Superseded(Exception):
    """A newer message of the conversation arrived before the agent was called (`_burst_turn`)."""


def _burst_turn(accepted: Accepted, *, media_chars: int = 0) -> list[HistoryItem]:
    """The latest burst mode's wait, instead of the turn's (`_history`): no wait for the earlier unanswered
    messages (this one answers them, or a newer one answers all), only for an earlier message that answers its
    burst whatever comes after (`Message.burst_final`), and for the channel's window after the newest
    message, restarted by each newer one and capped at BURST_WINDOW_MAX_MS after the burst's first message.
    Raises _Superseded as soon as a newer message is seen. Past the cap the message becomes its burst's
    final one (so a contact who never stops typing is answered). Then the history, the burst's messages in it,
    within the budget `_history` keeps.
    Holds no connection between looks, and keeps the lease as `_history` does."""
    deadline = time.monotonic() + settings.CONVERSATION_TURN_WAIT_SECONDS
    message = accepted.message
    window = timedelta(milliseconds=accepted.burst_window_ms)
    while True:
        now = timezone.now()
        state = burst_state(conversation_id=accepted.conversation_id, seq=message.seq, now=now)
        if state.last_seq > message.seq and not message.burst_final:
            raise _Superseded
        cap = state.burst_start + _BURST_WINDOW_MAX
        start_at = min(state.newest_at + window, cap)
        if not state.final_pending and now >= start_at:
            if now >= cap and not message.burst_final and not _burst_pin(accepted):
                continue  # a newer message came first: the next look supersedes this one
            history = history_build(
                message=message,
                max_messages=accepted.agent.history_max_messages,
                max_chars=accepted.agent.history_max_chars - media_chars,
                now=now,
                burst=True,
            )
            _lease_keep(accepted, now=now)
            return history
        _lease_keep(accepted, now=now)
        connection_release()
        pause = _BURST_POLL_SECONDS
        if not state.final_pending:
            pause = min(pause, max((start_at - now).total_seconds(), 0.0))
        elif time.monotonic() + pause > deadline:
            raise ConversationBusy(
                "An earlier message of this conversation is still being answered. Retry this message "
                "with the same idempotency key in a few seconds.",
                details={"conversationId": accepted.conversation_id},
                headers={"Retry-After": "5"},
            )
        time.sleep(pause)


def _call_watched(accepted: Accepted, call: Callable[[], AgentReply]) -> AgentReply:
    """The agent call of a message a newer one may supersede, in a thread of its own (a greenlet under
    gevent) while this one looks at the burst (one indexed query, no connection held between looks, the
    pauses growing from _BURST_POLL_SECONDS to a second): once a newer message is there, raises _Superseded
    at once, and the call is abandoned: it runs on to its deadline in its thread (no backend of ours can be
    interrupted mid-request) and its reply is discarded. The record phase checks again (`_record_once`)."""
    outcome: queue.Queue[tuple[AgentReply | None, BaseException | None]] = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            outcome.put((call(), None))
        except BaseException as error:  # given to the waiting request, which raises it
            outcome.put((None, error))
        finally:
            connections.close_all()  # this thread's own, should a backend have used one

    context = contextvars.copy_context()  # the request's log fields
    threading.Thread(target=context.run, args=(run,), name=f"agent-{accepted.message.pk}", daemon=True).start()
    pause = _BURST_POLL_SECONDS
    while True:
        try:
            reply, error = outcome.get(timeout=pause)
        except queue.Empty:
            state = burst_state(conversation_id=accepted.conversation_id, seq=accepted.message.seq, now=timezone.now())
            connection_release()
            if state.last_seq > accepted.message.seq:
                logger.info("agent call abandoned: a newer message arrived", message_id=accepted.message.pk)
                raise _Superseded from None
            pause = min(pause * 2, _CALL_POLL_MAX_SECONDS)
            continue
        if error is not None:
            raise error
        assert reply is not None
        return reply


def _burst_pin(accepted: Accepted) -> bool:
    """Make the message its burst's final one (`Message.burst_final`) if it is still the newest; False when a
    newer message came first. Under the rows' locks (`writes.burst_lock`), so that a newer message's accept
    phase either comes first (and supersedes this one) or sees the mark (and waits for this one's answer)."""
    with transaction.atomic():
        position = writes.burst_lock(message_id=accepted.message.pk, conversation_id=accepted.conversation_id)
        if position.last_seq > accepted.message.seq:
            return False
        writes.burst_pin(message_id=accepted.message.pk)
    accepted.message.burst_final = True
    return True


def _supersede_alone(accepted: Accepted, *, only_if_newer: bool = False) -> PostResult | None:
    """A message superseded before its agent was called (or, `only_if_newer`, one whose think phase failed,
    if a newer message arrived meanwhile; else None, and nothing written): its own short transaction (as the
    record phase's), with the checks of `_record_once` first."""
    with transaction.atomic():
        if accepted.claim is not None:
            if only_if_newer and not idempotency_owned(claim=accepted.claim):
                return None  # a retry took the key over: `_fail` leaves it alone too
            idempotency_hold(claim=accepted.claim)
        if accepted.exclusive and not inbound_message_lock_pending(message_id=accepted.message.pk):
            raise AnsweredElsewhere
        position = writes.burst_lock(message_id=accepted.message.pk, conversation_id=accepted.conversation_id)
        if only_if_newer and position.last_seq <= accepted.message.seq:
            return None
        body = _supersede(accepted, position)
    connection_release()
    return PostResult(status=200, body=body)


def _supersede(accepted: Accepted, position: writes.BurstPosition) -> bytes:
    """In the caller's transaction, which holds the message's and the conversation's rows: the message
    SUPERSEDED with its 200 body (no agent messages, no credits, `supersededBy` the newest message), its
    reservation released, its key completed with the body, and the body as `message.replied` for the
    channel's webhook. Returns the body."""
    result = MessageResult(
        contact_id=accepted.contact_id,
        conversation_id=accepted.conversation_id,
        message_id=accepted.message.pk,
        conversation=_conversation_view(
            accepted,
            agent=(accepted.agent.id, accepted.agent.name),
            status=position.status,
            last_message_at=position.last_message_at,
            closed_at=position.closed_at,
            close_reason=position.close_reason,
            labels=position.labels,
        ),
        ai_messages=[],
        usage=UsageView(credits=0, balance=writes.BALANCE_PLACEHOLDER, input_tokens=0, output_tokens=0),
        superseded_by=inbound_newest(conversation_id=accepted.conversation_id),
    )
    body = writes.inbound_supersede(
        message_id=accepted.message.pk,
        workspace_id=accepted.workspace_id,
        template=render(represent(SupersededResultSerializer, result)),
        claim=accepted.claim,
    )
    if body is None:
        raise AnsweredElsewhere  # the clean-up took the message as abandoned, or another run answered it
    logger.info("message superseded", message_id=accepted.message.pk, superseded_by=result.superseded_by)
    message_replied_emit(channel_id=accepted.channel_id, contact_id=accepted.contact_id, body=body)
    return body
