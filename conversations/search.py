"""The message list's search: by id, by text, by contact identifier, each on an index.

The text and identifier lookups are `UPPER(expr) LIKE UPPER('%term%')` (Django's `icontains`), served by
the trigram indexes declared on Message and Contact (`message_text_trgm`, `contact_identifier_trgm`); every branch of
the final OR is an index scan on the messages table (primary key, the (conversation, seq, part) index,
reply_to, the text's trigram index), which PostgreSQL combines with a bitmap OR. The contact branch first
finds the contacts' conversations (one query, bounded), so it is `conversation_id IN (...)` on an index,
not a join the OR could not use an index for.
"""

from django.db.models import Q

from conversations.models import Conversation

SEARCH_MIN_CHARS = 3  # a trigram index narrows nothing below three characters: shorter terms match exactly
SEARCH_MAX_CONVERSATIONS = 500  # of the contacts found by identifier; more would be a list, not a search


def message_search_q(*, term: str) -> Q:
    """The messages `term` names: its id, its conversation's or the message it answers' id, a text containing
    it, or a contact whose identifier contains it (exact match below SEARCH_MIN_CHARS characters)."""
    term = term.strip()
    found = Q(pk=term) | Q(conversation_id=term) | Q(reply_to_id=term)
    if len(term) >= SEARCH_MIN_CHARS:
        found |= Q(content__text__body__icontains=term)
        contacts = Q(contact__identifier__icontains=term)
    else:
        contacts = Q(contact__identifier__iexact=term)
    conversation_ids = list(
        Conversation.objects.filter(contacts).order_by().values_list("pk", flat=True)[:SEARCH_MAX_CONVERSATIONS]
    )
    if conversation_ids:
        found |= Q(conversation_id__in=conversation_ids)
    return found
