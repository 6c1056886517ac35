"""The messages endpoint's service: a contact's message in, the agent's replies out, in three phases.

1. Accept (one short transaction): claim the idempotency key, load the channel, store the inbound message,
   reserve the credits. Commit and give the connection back to the pool.
2. Think (no transaction, no connection held): fetch and check the message's media, wait for the
   conversation's turn, build the history, call the agent.
3. Record (one short transaction): store the replies, settle the credits, store the idempotent response.
A failed agent call keeps the inbound message, releases the credits and frees the idempotency key.
"""

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from backoffice.stats import message_stats_answered, message_stats_failed
from channels_app.credits import credits_cost, credits_estimate, credits_release, credits_reserve, credits_settle
from channels_app.idempotency import (
    Claim,
    Replay,
    idempotency_attach_message,
    idempotency_claim,
    idempotency_complete,
    idempotency_hold,
    idempotency_release,
)
from channels_app.models import Workspace
from channels_app.selectors import agent_config, channel_get_for_workspace
from config.errors import ApplicationError, ConversationBusy
from config.logs import log_bind
from config.metrics import agent_latency_observe, credits_spent_observe
from conversations.agents.base import AgentConfig, AgentReply, HistoryItem, get_backend
from conversations.media.pipeline import media_prepare
from conversations.models import Message
from conversations.services import (
    TurnNotReady,
    history_build,
    inbound_message_answer,
    inbound_message_fail,
    inbound_message_resume,
    inbound_message_store,
    replies_store,
)

logger = structlog.get_logger(__name__)

_ACCEPT_ATTEMPTS = 3  # a creation race loses at most once per unique row (contact, conversation, key)
# Seconds between looks at an earlier message's progress: a waiting message costs one indexed query per look,
# and a burst of N messages to one conversation is answered in about N x (agent time + this pause).
_TURN_POLL_FIRST, _TURN_POLL_MAX = 0.02, 0.2


@dataclass
class PostResult:
    status: int
    body: bytes
    replayed: bool = False


@dataclass
class Accepted:
    workspace_id: str
    channel_id: str
    agent: AgentConfig
    contact_id: str
    conversation_id: str
    conversation_created_at: datetime
    conversation_status: str
    message: Message
    reserved: int
    claim: Claim | None
    agent_seconds: float | None = None  # set by the think phase, for the dashboard's latency (backoffice)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def connection_release() -> None:
    """Give the connection back to the pool (closing it where there is no pool), unless a caller's
    transaction is open; tests that wrap each test in a transaction keep theirs."""
    if not connection.in_atomic_block:
        connection.close()


def message_post(
    *,
    workspace: Workspace,
    channel_id: str,
    contact_identifier: str,
    contact_name: str,
    type: str,
    content: dict[str, Any],
    idempotency_key: str | None,
    fingerprint: str,
) -> PostResult:
    accepted = _accept(
        workspace=workspace,
        channel_id=channel_id,
        contact_identifier=contact_identifier,
        contact_name=contact_name,
        type=type,
        content=content,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    if isinstance(accepted, Replay):
        return PostResult(status=accepted.status, body=accepted.body, replayed=True)
    connection_release()
    try:
        return _record(accepted, _think(accepted))
    except Exception as error:
        _fail(accepted, error)
        raise


def _accept(
    *,
    workspace: Workspace,
    channel_id: str,
    contact_identifier: str,
    contact_name: str,
    type: str,
    content: dict[str, Any],
    idempotency_key: str | None,
    fingerprint: str,
) -> Accepted | Replay:
    for attempt in range(1, _ACCEPT_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                return _accept_once(
                    workspace=workspace,
                    channel_id=channel_id,
                    contact_identifier=contact_identifier,
                    contact_name=contact_name,
                    type=type,
                    content=content,
                    idempotency_key=idempotency_key,
                    fingerprint=fingerprint,
                )
        except IntegrityError:
            # A concurrent request created the same contact, conversation or key first; now it is visible.
            if attempt == _ACCEPT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _accept_once(
    *,
    workspace: Workspace,
    channel_id: str,
    contact_identifier: str,
    contact_name: str,
    type: str,
    content: dict[str, Any],
    idempotency_key: str | None,
    fingerprint: str,
) -> Accepted | Replay:
    now = timezone.now()
    lease_until = now + timedelta(seconds=settings.PROCESSING_LEASE_SECONDS)
    claim = None
    if idempotency_key is not None:
        claimed = idempotency_claim(workspace_id=workspace.pk, key=idempotency_key, fingerprint=fingerprint, now=now)
        if isinstance(claimed, Replay):
            return claimed
        claim = claimed
    channel = channel_get_for_workspace(channel_id=channel_id, workspace_id=workspace.pk)
    agent = agent_config(agent=channel.agent)
    if claim is not None and claim.message_id is not None:
        # An earlier attempt stored the message and failed (or died): answer that message, not a new one.
        message = inbound_message_resume(message_id=claim.message_id, lease_until=lease_until)
        conversation = message.conversation
        reserved = message.credits_reserved  # still held if the earlier attempt died mid-way
        if reserved == 0:
            reserved = credits_estimate(agent=agent)
            credits_reserve(workspace_id=workspace.pk, amount=reserved)
            Message.objects.filter(pk=message.pk).update(credits_reserved=reserved)
            message.credits_reserved = reserved
        return Accepted(
            workspace_id=workspace.pk,
            channel_id=channel.pk,
            agent=agent,
            contact_id=conversation.contact_id,
            conversation_id=conversation.pk,
            conversation_created_at=conversation.created_at,
            conversation_status=conversation.status,
            message=message,
            reserved=reserved,
            claim=claim,
        )
    reserved = credits_estimate(agent=agent)
    stored = inbound_message_store(
        workspace_id=workspace.pk,
        channel_id=channel.pk,
        agent_id=agent.id,
        contact_identifier=contact_identifier,
        contact_name=contact_name,
        type=type,
        content=content,
        now=now,
        lease_until=lease_until,
        credits_reserved=reserved,
    )
    if claim is not None:
        idempotency_attach_message(claim=claim, message_id=stored.message.pk)
    # Last, so the workspace row's lock is held for the shortest time before commit.
    credits_reserve(workspace_id=workspace.pk, amount=reserved)
    return Accepted(
        workspace_id=workspace.pk,
        channel_id=channel.pk,
        agent=agent,
        contact_id=stored.contact_id,
        conversation_id=stored.conversation_id,
        conversation_created_at=stored.conversation_created_at,
        conversation_status="OPEN",
        message=stored.message,
        reserved=reserved,
        claim=claim,
    )


def _history(accepted: Accepted) -> list[HistoryItem]:
    """Wait until every earlier message of the conversation is answered, then read the history. The
    connection goes back to the pool between looks, so a waiting request holds none."""
    deadline = time.monotonic() + settings.CONVERSATION_TURN_WAIT_SECONDS
    pause = _TURN_POLL_FIRST
    while True:
        try:
            return history_build(
                message=accepted.message,
                max_messages=accepted.agent.history_max_messages,
                max_chars=accepted.agent.history_max_chars,
                now=timezone.now(),
            )
        except TurnNotReady:
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


def _think(accepted: Accepted) -> AgentReply:
    media = None
    if accepted.message.type != Message.Type.TEXT:
        # Before the turn's wait: a refused or unreachable file fails the message without waiting.
        media = media_prepare(message=accepted.message, agent=accepted.agent, workspace_id=accepted.workspace_id)
    history = _history(accepted)
    if media is not None:
        history[-1] = replace(history[-1], media=media)
    connection_release()
    started = time.monotonic()
    reply = get_backend(accepted.agent.provider).reply(agent=accepted.agent, history=history)
    seconds = round(time.monotonic() - started, 3)
    log_bind(agent_seconds=seconds)  # also on the request's "request_finished" line
    accepted.agent_seconds = seconds
    agent_latency_observe(provider=accepted.agent.provider, seconds=seconds)
    logger.info("agent replied", agent_id=accepted.agent.id, parts=len(reply.texts))
    return reply


def _fail(accepted: Accepted, error: Exception) -> None:
    code = error.code if isinstance(error, ApplicationError) else "internal_error"
    with transaction.atomic():
        if accepted.claim is not None and not idempotency_release(claim=accepted.claim):
            return  # a retry took the key over, with the message and its reservation: they are not ours
        released = inbound_message_fail(message_id=accepted.message.pk, error_code=code, reserved=accepted.reserved)
        credits_release(workspace_id=accepted.workspace_id, amount=released)
        message_stats_failed(message_ids=[accepted.message.pk], error_code=code, at=timezone.now())


def _record(accepted: Accepted, reply: AgentReply) -> PostResult:
    now = timezone.now()
    cost = credits_cost(agent=accepted.agent, input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)
    with transaction.atomic():
        if accepted.claim is not None:
            idempotency_hold(claim=accepted.claim)  # first: a retry that took the key over records instead
        reserved = inbound_message_answer(message_id=accepted.message.pk, reserved=accepted.reserved)
        charge = min(cost, reserved)
        replies = replies_store(
            message=accepted.message,
            texts=reply.texts,
            credits=charge,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            now=now,
        )
        charged, balance = credits_settle(
            workspace_id=accepted.workspace_id,
            reserved=reserved,
            cost=cost,
            message_id=accepted.message.pk,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            now=now,
        )
        message_stats_answered(
            workspace_id=accepted.workspace_id,
            channel_id=accepted.channel_id,
            at=now,
            replies=len(replies),
            credits=charged,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            agent_seconds=accepted.agent_seconds,
        )
        body = render(
            {
                "success": True,
                "contactId": accepted.contact_id,
                "conversationId": accepted.conversation_id,
                "messageId": accepted.message.pk,
                "conversation": {
                    "id": accepted.conversation_id,
                    "status": accepted.conversation_status,
                    "channelId": accepted.channel_id,
                    "contactId": accepted.contact_id,
                    "assignee": {"type": "AI_AGENT", "id": accepted.agent.id, "name": accepted.agent.name},
                    "createdAt": iso(accepted.conversation_created_at),
                    "lastMessageAt": iso(now),
                },
                "aiMessages": [
                    {"id": reply.pk, "type": reply.type, "content": reply.content, "createdAt": iso(reply.created_at)}
                    for reply in replies
                ],
                "usage": {
                    "credits": charged,
                    "balance": balance,
                    "inputTokens": reply.input_tokens,
                    "outputTokens": reply.output_tokens,
                },
            }
        )
        if accepted.claim is not None:
            idempotency_complete(claim=accepted.claim, status=200, body=body)
    # Back to the pool now, not at the end of the request: rendering and logging need no connection, and
    # under load every moment a waiting request holds one is a moment another request waits for it.
    connection_release()
    credits_spent_observe(charged)
    return PostResult(status=200, body=body)
