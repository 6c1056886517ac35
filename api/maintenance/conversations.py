"""Closing conversations, and telling the channel's webhook (README "Conversations").

A close is one conditional UPDATE (conversations.services.conversation_close and
conversations_close_idle); the code here runs it inside a transaction with the close's `conversation.closed`
event, whose `data.conversation` is the conversation object exactly as the messages endpoint's 200 body
renders it (api.serializers.ConversationSerializer). It sits in `api` because that rendering does: the
conversations app knows nothing of the API's shapes, nor of webhooks (README "Layout").
"""

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from api.serializers import ConversationSerializer, ConversationView, represent
from api.serializers import conversation_view as serializers_conversation_view
from config.text import text_storable
from conversations.errors import ConversationNotFound
from conversations.models import Conversation
from conversations.services import conversation_close
from webhooks.services import conversation_closed_emit


def conversation_view(conversation: Conversation) -> ConversationView:
    """The API's view of a conversation loaded by `conversations_load` (its agent, its channel's team), through
    the one mapping of api.serializers.conversation_view. A conversation whose agent was deleted names the
    channel's agent, or none."""
    agent = conversation.agent or conversation.channel.agent
    team = conversation.channel.team
    return serializers_conversation_view(
        {
            "id": conversation.pk,
            "status": conversation.status,
            "channel_id": conversation.channel_id,
            "contact_id": conversation.contact_id,
            "agent_id": agent.pk if agent is not None else None,
            "agent_name": agent.name if agent is not None else None,
            "team_id": team.pk if team is not None else None,
            "team_name": team.name if team is not None else None,
            "created_at": conversation.created_at,
            "last_message_at": conversation.last_message_at,
            "closed_at": conversation.closed_at,
            "close_reason": conversation.close_reason,
            "labels": conversation.labels,
        }
    )


def conversation_render(conversation: Conversation) -> dict[str, Any]:
    """The conversation object of the 200 body (`conversation`), as plain data."""
    return represent(ConversationSerializer, conversation_view(conversation))


def conversations_load(*, conversation_ids: list[str], workspace_id: str | None = None) -> list[Conversation]:
    """The conversations with what their rendering reads, in one query; only the workspace's when given."""
    rows = Conversation.objects.select_related("agent", "channel__agent", "channel__team").filter(
        pk__in=conversation_ids
    )
    if workspace_id is not None:
        rows = rows.filter(workspace_id=workspace_id)
    return list(rows.order_by("pk"))


def conversations_closed_announce(*, conversation_ids: list[str]) -> list[dict[str, Any]]:
    """Emit `conversation.closed` for each of these just-closed conversations (to its channel's webhook, if
    it has one); returns their objects. Call it in the transaction that closed them."""
    rendered = []
    for conversation in conversations_load(conversation_ids=conversation_ids):
        body = conversation_render(conversation)
        conversation_closed_emit(channel_id=conversation.channel_id, conversation=body)
        rendered.append(body)
    return rendered


def conversation_close_request(*, workspace_id: str, conversation_id: str, now: datetime | None = None) -> dict:
    """`POST /api/v1/conversations/{conversationId}/close`: close the workspace's conversation (reason
    `api`) and return its object. Idempotent: a closed conversation is returned as it is, and only the
    close that changed it emits the event. Raises ConversationNotFound for an id the workspace has not,
    another workspace's included (its existence is not confirmed)."""
    if not text_storable(conversation_id):
        raise ConversationNotFound(details={"conversationId": conversation_id})
    with transaction.atomic():
        closed = conversation_close(
            conversation_id=conversation_id,
            workspace_id=workspace_id,
            reason=Conversation.CloseReason.API,
            now=now or timezone.now(),
        )
        found = conversations_load(conversation_ids=[conversation_id], workspace_id=workspace_id)
        if not found:
            raise ConversationNotFound(details={"conversationId": conversation_id})
        body = conversation_render(found[0])
        if closed:
            conversation_closed_emit(channel_id=found[0].channel_id, conversation=body)
    return body


def conversations_close_by_operator(*, conversation_ids: list[str], now: datetime | None = None) -> int:
    """The admin's "Close" action: close those of the conversations that are active (reason `operator`),
    each with its event, in one transaction; returns how many were closed."""
    now = now or timezone.now()
    with transaction.atomic():
        closed = [
            conversation.pk
            for conversation in Conversation.objects.filter(pk__in=conversation_ids).only("pk", "workspace_id")
            if conversation_close(
                conversation_id=conversation.pk,
                workspace_id=conversation.workspace_id,
                reason=Conversation.CloseReason.OPERATOR,
                now=now,
            )
        ]
        conversations_closed_announce(conversation_ids=closed)
    return len(closed)
