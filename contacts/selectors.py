"""The read API's queries about contacts (api/edge/read_views.py). Which contacts: here; what the API shows of
each (with its last message's time, from the conversations above this layer): conversations.selectors."""

from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from contacts.identity import identifier_key
from contacts.models import Contact


def contact_queryset(*, workspace_id: str, contact_id: str) -> QuerySet[Contact, Any]:
    """The workspace's contact by id: empty for an unknown id or another workspace's."""
    return Contact.objects.filter(pk=contact_id, workspace_id=workspace_id)


def contact_list_queryset(
    *, workspace_id: str, identifier: str | None, after: tuple[datetime, str] | None
) -> QuerySet[Contact, Any]:
    """With `identifier`: the one contact it names (contacts.identity, as the messages endpoint matches),
    or none. Without: the workspace's contacts, newest first by (created_at, id), after the key `after`, on
    the contact_ws_recent index (the `>=` bound starts the range scan: no OFFSET)."""
    queryset = Contact.objects.filter(workspace_id=workspace_id)
    if identifier is not None:
        queryset = queryset.filter(identifier_key=identifier_key(identifier))
    if after is not None:
        at, last_id = after
        queryset = queryset.filter(created_at__lte=at).filter(Q(created_at__lt=at) | Q(id__lt=last_id))
    return queryset.order_by("-created_at", "-id")
