"""The read and data API (README "The read API"): contacts, conversations, messages, usage, and erasing
a contact. Same key authentication, rate limit and error body as the messages endpoint; another
workspace's ids answer 404. Thin views: the queries are the owning apps' selectors, the shapes
api.serializers', the documentation api.edge.schema's."""

from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.http import HttpResponse
from django.utils import timezone
from rest_framework.views import APIView

from api.edge.schema import (
    contact_delete_schema,
    contact_get_schema,
    contact_list_schema,
    contact_patch_schema,
    conversation_get_schema,
    conversation_list_schema,
    conversation_messages_schema,
    message_get_schema,
    usage_schema,
)
from api.flow.messaging import render
from api.maintenance.erasure import contact_erase
from api.serializers import (
    ContactSerializer,
    ConversationSerializer,
    MessageItemSerializer,
    conversation_view,
    message_item,
    represent,
)
from billing.selectors import usage_days
from channels_app.authentication import ApiKeyAuthentication
from config.days import FIRST_DAY as USAGE_FIRST_DAY
from config.days import LAST_DAY as USAGE_LAST_DAY
from config.errors import ApplicationError, InvalidRequest
from config.logs import log_bind
from config.pagination import cursor_decode, cursor_encode, page_limit
from config.text import text_storable
from contacts.attributes import ATTRIBUTES_MAX_KEYS, attributes_changes_errors
from contacts.errors import ContactNotFound
from contacts.models import Contact, contact_name_or_null
from contacts.selectors import contact_list_queryset, contact_queryset
from contacts.services import TooManyAttributes, contact_attributes_merge
from conversations.errors import ConversationNotFound, MessageNotFound
from conversations.labels import LABEL_MAX_CHARS
from conversations.models import Conversation
from conversations.selectors import (
    contact_rows,
    conversation_exists,
    conversation_get,
    conversation_list,
    message_get,
    message_list,
)

USAGE_MAX_DAYS = 366  # a leap year: one year's figures in one request, one grouped query
USAGE_DEFAULT_DAYS = 30


def _json(body: dict[str, Any], status: int = 200) -> HttpResponse:
    return HttpResponse(render(body), status=status, content_type="application/json")


def _page(items: list[dict[str, Any]], *, next_key: list[Any] | None) -> HttpResponse:
    return _json({"success": True, "data": items, "nextCursor": cursor_encode(next_key) if next_key else None})


def _time_key(raw: str | None) -> tuple[datetime, str] | None:
    key = cursor_decode(raw, shape=(str, str))
    if key is None:
        return None
    try:
        at = datetime.fromisoformat(key[0])
    except ValueError:
        raise InvalidRequest(
            "The cursor is not one this list gave out. Send the nextCursor of the previous page unchanged, "
            "or leave cursor out for the first page.",
            details={"cursor": "invalid"},
        ) from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)), key[1]


def _time_cursor(at: datetime, row_id: str) -> list[Any]:
    return [at.astimezone(UTC).isoformat(), row_id]


def _contact(row: dict[str, Any]) -> dict[str, Any]:
    return represent(ContactSerializer, {**row, "name": contact_name_or_null(row["name"])})


def _conversation(row: dict[str, Any]) -> dict[str, Any]:
    return represent(ConversationSerializer, conversation_view(row))


def _message(row: dict[str, Any]) -> dict[str, Any]:
    return represent(MessageItemSerializer, message_item(row))


class _ReadApi(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes: list = []
    # What an id in the URL that no row could hold (U+0000, a lone surrogate) names: nothing.
    not_found: type[ApplicationError] | None = None

    def perform_authentication(self, request):
        super().perform_authentication(request)
        log_bind(workspace_id=request.auth.workspace_id, api_key_prefix=request.auth.prefix)

    def initial(self, request, *args, **kwargs):
        """After authentication and throttling: ids and query values that PostgreSQL cannot store are never
        sent to it. In the path such an id names no row (404); in a query it is a mistake (400)."""
        super().initial(request, *args, **kwargs)
        for name, value in kwargs.items():
            if not text_storable(str(value)) and self.not_found is not None:
                raise self.not_found(details={name: "no such id"})
        for name, values in request.query_params.lists():
            if not all(text_storable(value) for value in values):
                raise InvalidRequest(
                    f"The query parameter {name} holds U+0000 or an unpaired surrogate. Remove it.",
                    details={name: "contains U+0000 or an unpaired surrogate"},
                )


class ContactDetailApi(_ReadApi):
    not_found = ContactNotFound

    @contact_get_schema
    def get(self, request, contactId: str):
        rows = contact_rows(
            queryset=contact_queryset(workspace_id=request.auth.workspace_id, contact_id=contactId), limit=1
        )
        if not rows:
            raise ContactNotFound(details={"contactId": contactId})
        return _json({"success": True, "contact": _contact(rows[0])})

    @contact_patch_schema
    def patch(self, request, contactId: str):
        body = request.data
        unknown = sorted(set(body) - {"attributes"}) if isinstance(body, dict) else []
        if not isinstance(body, dict) or unknown or "attributes" not in body:
            raise InvalidRequest(
                'Send a JSON object {"attributes": {"key": "value" | null}}: a string sets a key, null removes it.',
                details={key: "unknown field" for key in unknown} or {"attributes": "required"},
            )
        errors = attributes_changes_errors(body["attributes"])
        if errors:
            raise InvalidRequest("Some attributes cannot be stored. Fix the keys named in details.", details=errors)
        try:
            attributes = contact_attributes_merge(
                workspace_id=request.auth.workspace_id, contact_id=contactId, changes=body["attributes"]
            )
        except Contact.DoesNotExist:
            raise ContactNotFound(details={"contactId": contactId}) from None
        except TooManyAttributes:
            raise InvalidRequest(
                f"A contact has at most {ATTRIBUTES_MAX_KEYS} attributes. Remove some (send them as null) first.",
                details={"attributes": f"more than {ATTRIBUTES_MAX_KEYS} keys after the merge"},
            ) from None
        log_bind(contact_id=contactId)
        rows = contact_rows(
            queryset=contact_queryset(workspace_id=request.auth.workspace_id, contact_id=contactId), limit=1
        )
        contact = rows[0] if rows else {"id": contactId}
        return _json({"success": True, "contact": _contact({**contact, "attributes": attributes})})

    @contact_delete_schema
    def delete(self, request, contactId: str):
        erased = contact_erase(workspace_id=request.auth.workspace_id, contact_id=contactId)
        return _json({"success": True, "erased": {"messages": erased.messages, "media": erased.media}})


class ContactListApi(_ReadApi):
    @contact_list_schema
    def get(self, request):
        limit = page_limit(request.query_params.get("limit"))
        identifier = request.query_params.get("identifier")
        after = _time_key(request.query_params.get("cursor"))
        queryset = contact_list_queryset(
            workspace_id=request.auth.workspace_id, identifier=identifier or None, after=after
        )
        rows = contact_rows(queryset=queryset, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_key = _time_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
        return _page([_contact(row) for row in rows], next_key=next_key)


class ConversationListApi(_ReadApi):
    @conversation_list_schema
    def get(self, request):
        params = request.query_params
        limit = page_limit(params.get("limit"))
        status = params.get("status") or None
        if status is not None and status not in Conversation.Status.values:
            raise InvalidRequest(
                "The status must be ACTIVE or CLOSED. Send one of them or leave status out.",
                details={"status": f"got {status[:20]!r}"},
            )
        label = params.get("label") or None
        if label is not None and len(label) > LABEL_MAX_CHARS:
            raise InvalidRequest(
                f"A label has at most {LABEL_MAX_CHARS} characters. Send one label as it was set.",
                details={"label": f"{len(label)} characters"},
            )
        order = params.get("order") or "lastMessage"
        if order not in ("lastMessage", "created"):
            raise InvalidRequest(
                "The order must be lastMessage or created. Send one of them or leave order out.",
                details={"order": f"got {order[:20]!r}"},
            )
        by_creation = order == "created"
        created_key = cursor_decode(params.get("cursor"), shape=(str,)) if by_creation else None
        rows = conversation_list(
            workspace_id=request.auth.workspace_id,
            label=label,
            channel_id=params.get("channelId") or None,
            contact_id=params.get("contactId") or None,
            status=status,
            after=None if by_creation else _time_key(params.get("cursor")),
            limit=limit + 1,
            by_creation=by_creation,
            after_id=created_key[0] if created_key else None,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        if by_creation:
            next_key = [rows[-1]["id"]] if more else None
        else:
            next_key = _time_cursor(rows[-1]["last_message_at"], rows[-1]["id"]) if more else None
        return _page([_conversation(row) for row in rows], next_key=next_key)


class ConversationDetailApi(_ReadApi):
    not_found = ConversationNotFound

    @conversation_get_schema
    def get(self, request, conversationId: str):
        row = conversation_get(workspace_id=request.auth.workspace_id, conversation_id=conversationId)
        if row is None:
            raise ConversationNotFound(details={"conversationId": conversationId})
        return _json({"success": True, "conversation": _conversation(row)})


class ConversationMessagesApi(_ReadApi):
    not_found = ConversationNotFound

    @conversation_messages_schema
    def get(self, request, conversationId: str):
        limit = page_limit(request.query_params.get("limit"))
        key = cursor_decode(request.query_params.get("cursor"), shape=(int, int, str))
        if not conversation_exists(workspace_id=request.auth.workspace_id, conversation_id=conversationId):
            raise ConversationNotFound(details={"conversationId": conversationId})
        after = (key[0], key[1]) if key is not None else None
        rows = message_list(conversation_id=conversationId, after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_key = [rows[-1]["seq"], rows[-1]["part"], rows[-1]["id"]] if more else None
        return _page([_message(row) for row in rows], next_key=next_key)


class MessageDetailApi(_ReadApi):
    not_found = MessageNotFound

    @message_get_schema
    def get(self, request, messageId: str):
        row = message_get(workspace_id=request.auth.workspace_id, message_id=messageId)
        if row is None:
            raise MessageNotFound(details={"messageId": messageId})
        result = row.pop("result")
        # The stored 200 body goes in as its bytes, not parsed and rendered again: byte for byte what the
        # messages endpoint answered, and no JSON work for a client that polls.
        head = render({"success": True, "message": _message(row)})[:-1]
        body = head + b',"result":' + (bytes(result) if result is not None else b"null") + b"}"
        return HttpResponse(body, content_type="application/json")


def _day(raw: str | None, name: str, default: date) -> date:
    if raw is None or raw == "":
        return default
    try:
        if len(raw) != 10 or raw[4] != "-" or raw[7] != "-":  # fromisoformat also takes 20261101, 2026-W48-1
            raise ValueError(raw)
        day = date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(
            f"The {name} date must be a day as YYYY-MM-DD (UTC). Send e.g. 2026-11-01.",
            details={name: "not YYYY-MM-DD"},
        ) from None
    if not USAGE_FIRST_DAY <= day <= USAGE_LAST_DAY:
        # A range and its default start are computed in days around it: keep that arithmetic inside the calendar.
        raise InvalidRequest(
            f"The {name} date must lie between {USAGE_FIRST_DAY} and {USAGE_LAST_DAY}. Send a day in that range.",
            details={name: "out of range"},
        )
    return day


class UsageApi(_ReadApi):
    @usage_schema
    def get(self, request):
        today = timezone.now().astimezone(UTC).date()
        last = _day(request.query_params.get("to"), "to", today)
        first = _day(request.query_params.get("from"), "from", last - timedelta(days=USAGE_DEFAULT_DAYS - 1))
        if first > last:
            raise InvalidRequest(
                "The from date is after the to date. Send from on or before to.", details={"from": "after to"}
            )
        if (last - first).days + 1 > USAGE_MAX_DAYS:
            raise InvalidRequest(
                f"The range is longer than {USAGE_MAX_DAYS} days. Send a shorter range, or several requests.",
                details={"to": f"more than {USAGE_MAX_DAYS} days after from"},
            )
        workspace = request.auth.workspace  # read with the key, in this request: current
        days = usage_days(workspace_id=workspace.pk, first=first, last=last)
        return _json(
            {"success": True, "balance": workspace.credit_balance, "reserved": workspace.credit_reserved, "days": days}
        )
