"""Exports for operators: a conversation's transcript and the usage ledger for a date range, as CSV or JSON.

Both are generators over `.iterator(chunk_size=EXPORT_CHUNK_SIZE)` (a server-side cursor on PostgreSQL),
handed to a StreamingHttpResponse: a conversation of a million messages or a year of ledger goes out in
chunks, and the process holds one chunk at a time, never the whole export.
"""

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from billing.models import UsageLedgerEntry
from contacts.models import contact_name_or_null
from conversations.models import Conversation, Message, content_body

EXPORT_CHUNK_SIZE = 2000  # rows per fetch: a few hundred KiB of message content at most
# A spreadsheet runs a cell that starts with one of these as a formula; a contact's message must stay text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

TRANSCRIPT_COLUMNS = [
    "id",
    "seq",
    "part",
    "direction",
    "type",
    "text",
    "media_url",
    "media_mime_type",
    "media_size",
    "status",
    "error_code",
    "credits",
    "input_tokens",
    "output_tokens",
    "created_at",
    "metadata",  # the integrator's object, as JSON; empty when it sent none
]
LEDGER_COLUMNS = [
    "id",
    "created_at",
    "workspace_id",
    "kind",
    "delta",
    "balance_after",
    "message_id",
    "input_tokens",
    "output_tokens",
    "note",
]


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None


class _Line:
    """A file-like object for csv.writer that hands back each line instead of storing it."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def _csv_value(value: Any) -> Any:
    """A cell: a dict (a message's metadata) as compact JSON, "" when empty; a string that a spreadsheet
    would run as a formula, quoted."""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")) if value else ""
    return _cell(value)


def csv_lines(columns: list[str], rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(columns)
    for row in rows:
        yield writer.writerow([_csv_value(row[column]) for column in columns])


def transcript_rows(*, conversation: Conversation, chunk_size: int = EXPORT_CHUNK_SIZE) -> Iterator[dict[str, Any]]:
    """The conversation's messages in (seq, part) order: the (conversation, seq, part) unique index, read in
    chunks."""
    messages = (
        Message.objects.filter(conversation=conversation)
        .order_by("seq", "part")
        .values(
            "id",
            "seq",
            "part",
            "direction",
            "type",
            "content",
            "metadata",
            "status",
            "error_code",
            "credits",
            "input_tokens",
            "output_tokens",
            "media_mime_type",
            "media_size",
            "created_at",
        )
    )
    for message in messages.iterator(chunk_size=chunk_size):
        body = content_body(type=message["type"], content=message["content"])
        text = body.get("body") if message["type"] == Message.Type.TEXT else body.get("caption")
        yield {
            **message,
            "text": text if isinstance(text, str) else "",
            "media_url": body.get("url") if message["type"] != Message.Type.TEXT else None,
            "created_at": _iso(message["created_at"]),
        }


def transcript_json(*, conversation: Conversation, chunk_size: int = EXPORT_CHUNK_SIZE) -> Iterator[str]:
    """`{"conversation": {...}, "messages": [...]}`, camelCase like the API; one message per chunk."""
    head = {
        "id": conversation.pk,
        "workspaceId": conversation.workspace_id,
        "channelId": conversation.channel_id,
        "contactId": conversation.contact_id,
        "contactIdentifier": conversation.contact.identifier,
        "contactName": contact_name_or_null(conversation.contact.name),
        "status": conversation.status,
        "createdAt": _iso(conversation.created_at),
        "lastMessageAt": _iso(conversation.last_message_at),
    }
    yield '{"conversation": ' + json.dumps(head, ensure_ascii=False) + ', "messages": ['
    separator = "\n"
    for row in transcript_rows(conversation=conversation, chunk_size=chunk_size):
        item = {
            "id": row["id"],
            "seq": row["seq"],
            "part": row["part"],
            "direction": row["direction"],
            "type": row["type"],
            "content": row["content"],
            "metadata": row["metadata"],
            "status": row["status"],
            "errorCode": row["error_code"] or None,
            "credits": row["credits"],
            "inputTokens": row["input_tokens"],
            "outputTokens": row["output_tokens"],
            "mediaMimeType": row["media_mime_type"] or None,
            "mediaSize": row["media_size"],
            "createdAt": row["created_at"],
        }
        yield separator + json.dumps(item, ensure_ascii=False)
        separator = ",\n"
    yield "\n]}\n"


def ledger_rows(
    *, start: date, end: date, workspace_id: str = "", chunk_size: int = EXPORT_CHUNK_SIZE
) -> Iterator[dict[str, Any]]:
    """The ledger's entries created on the UTC days `start`..`end`, oldest first: a range of the
    `created_at` index (or of (workspace, created_at) for one workspace), read in chunks."""
    entries = UsageLedgerEntry.objects.filter(
        created_at__gte=datetime.combine(start, time.min, tzinfo=UTC),
        created_at__lt=datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
    )
    if workspace_id:
        entries = entries.filter(workspace_id=workspace_id)
    for entry in entries.order_by("created_at", "id").values(*LEDGER_COLUMNS).iterator(chunk_size=chunk_size):
        yield {**entry, "created_at": _iso(entry["created_at"])}


def ledger_json(
    *, start: date, end: date, workspace_id: str = "", chunk_size: int = EXPORT_CHUNK_SIZE
) -> Iterator[str]:
    """`{"from", "to", "workspaceId", "entries": [...]}`, camelCase like the API."""
    yield json.dumps({"from": start.isoformat(), "to": end.isoformat(), "workspaceId": workspace_id or None})[:-1]
    yield ', "entries": ['
    separator = "\n"
    for row in ledger_rows(start=start, end=end, workspace_id=workspace_id, chunk_size=chunk_size):
        item = {
            "id": row["id"],
            "createdAt": row["created_at"],
            "workspaceId": row["workspace_id"],
            "kind": row["kind"],
            "delta": row["delta"],
            "balanceAfter": row["balance_after"],
            "messageId": row["message_id"],
            "inputTokens": row["input_tokens"],
            "outputTokens": row["output_tokens"],
            "note": row["note"],
        }
        yield separator + json.dumps(item, ensure_ascii=False)
        separator = ",\n"
    yield "\n]}\n"
