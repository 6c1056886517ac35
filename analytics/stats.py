"""The daily rollup of message outcomes (analytics.models.MessageDay): how it is fed, and rebuilt.

Fed on the hot path with one statement per outcome, each inside the caller's transaction, so a row counts a
message exactly when the message's own change commits:
- `message_stats_answered_statement` in the record phase, a step of its first statement (api/flow/writes.py);
- `message_stats_failed` in the failure path and in the clean-up of abandoned messages (api/maintenance/cleanup.py),
  for the rows that transaction has just marked FAILED.
The statement is `INSERT ... ON CONFLICT (workspace, day, channel, error_code) DO UPDATE SET col = col +
EXCLUDED.col`. Concurrent messages of one channel update the
same row and wait on its lock only until their transactions commit, which are short by design.

`message_stats_rebuild` recomputes past days from the messages (`manage.py stats rebuild`), for history that
predates the rollup or a day that needs mending.
"""

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F, Min, Sum

from analytics.models import LATENCY_BUCKETS_MS, LATENCY_FIELDS, MessageDay
from conversations.models import Conversation, Message

_KEY = ("workspace_id", "day", "channel_id", "error_code")
_SUMS = ("messages", "replies", "credits", "input_tokens", "output_tokens", "agent_ms", *LATENCY_FIELDS)
REBUILD_CHUNK_SIZE = 5000  # message rows per fetch from the server-side cursor
# How long after its arrival an inbound message may still be answered or failed and count on a later day:
# the lease (PROCESSING_LEASE_SECONDS) and the clean-up's margin are minutes; a day covers both with room.
_OUTCOME_LAG = timedelta(days=1)


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


@cache  # the statements are built once per process: the hot path only binds values
def _upsert_tail() -> str:
    table = _q(MessageDay._meta.db_table)
    sets = ", ".join(f"{_q(column)} = {table}.{_q(column)} + EXCLUDED.{_q(column)}" for column in _SUMS)
    return f"ON CONFLICT ({', '.join(_q(column) for column in _KEY)}) DO UPDATE SET {sets}"


def outcome_day(at: datetime) -> date:
    """The rollup's day of an outcome: its UTC date (the ledger's and the dashboard's days are UTC too)."""
    return at.astimezone(UTC).date()


def latency_bucket(milliseconds: int) -> int:
    """The histogram bucket of a latency: the first whose inclusive upper bound holds it, else the last."""
    return bisect_left(LATENCY_BUCKETS_MS, milliseconds)


def message_stats_answered_statement(
    *,
    workspace_id: str,
    channel_id: str,
    at: datetime,
    replies: int,
    credits: int,
    input_tokens: int,
    output_tokens: int,
    agent_seconds: float | None,
) -> tuple[str, list[Any]]:
    """Count one answered message: the upsert and its parameters, which api/flow/writes.py runs as a step of the
    record phase's statement. `agent_seconds` is the agent call's duration; None leaves the latency histogram
    alone."""
    values = dict.fromkeys(_SUMS, 0)
    values.update(messages=1, replies=replies, credits=credits, input_tokens=input_tokens, output_tokens=output_tokens)
    if agent_seconds is not None:
        milliseconds = max(round(agent_seconds * 1000), 0)
        values["agent_ms"] = milliseconds
        values[LATENCY_FIELDS[latency_bucket(milliseconds)]] = 1
    return _answered_sql(), [workspace_id, outcome_day(at), channel_id, "", *(values[column] for column in _SUMS)]


@cache
def _answered_sql() -> str:
    columns = (*_KEY, *_SUMS)
    return (
        f"INSERT INTO {_q(MessageDay._meta.db_table)} ({', '.join(_q(c) for c in columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))}) {_upsert_tail()}"
    )


def message_stats_failed(*, message_ids: Sequence[str], error_code: str, at: datetime) -> None:
    """Count the messages among `message_ids` that are FAILED with `error_code`, per channel, in one
    statement. Call it in the transaction that marked them failed, after the UPDATE: a message that UPDATE
    did not match (already answered, or taken by the clean-up under another code) is not counted."""
    if not message_ids:
        return
    message, conversation = Message._meta.db_table, Conversation._meta.db_table
    zeros = ", ".join("0" for _ in _SUMS[1:])
    placeholders = ", ".join(["%s"] * len(message_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_q(MessageDay._meta.db_table)} ({', '.join(_q(c) for c in (*_KEY, *_SUMS))}) "
            f"SELECT cv.{_q('workspace_id')}, %s, cv.{_q('channel_id')}, m.{_q('error_code')}, COUNT(*), {zeros} "
            f"FROM {_q(message)} m INNER JOIN {_q(conversation)} cv ON cv.{_q('id')} = m.{_q('conversation_id')} "
            f"WHERE m.{_q('id')} IN ({placeholders}) AND m.{_q('status')} = %s AND m.{_q('error_code')} = %s "
            f"GROUP BY cv.{_q('workspace_id')}, cv.{_q('channel_id')}, m.{_q('error_code')} "
            # Rows locked in key order: two clean-up batches of one channel cannot wait on each other.
            f"ORDER BY cv.{_q('workspace_id')}, cv.{_q('channel_id')} {_upsert_tail()}",
            [outcome_day(at), *message_ids, Message.Status.FAILED, error_code],
        )


# --- rebuilding past days ----------------------------------------------------------------------------------

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def _message_id_floor(at: datetime) -> str:
    """The smallest message id created at or after `at`: ids are "msg_" and a lower-case ULID whose first
    ten characters are its millisecond time (config/ids.py), so ids sort by creation time and a time range
    is a range of the primary key's index."""
    value = int(at.timestamp() * 1000)
    chars = []
    for _ in range(10):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "msg_" + "".join(reversed(chars)) + "0" * 16


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def message_stats_rebuild(*, start: date, end: date, chunk_size: int = REBUILD_CHUNK_SIZE) -> int:
    """Recompute the rollup's days `start`..`end` (inclusive) from the messages; returns the rows written.

    Reads the inbound messages that arrived from a day before `start` to a day after `end` (a range of the
    primary key, in chunks from a server-side cursor, so memory holds only the day totals) and counts each
    by its outcome's day: an answered message on the day of its first reply (the ledger's day), a failed one
    on the day it arrived (no failure time is stored; it is seconds later, minutes for an abandoned one).
    The agent's latency is the time from the message to its first reply, which also holds the media download
    and the wait for the conversation's turn. Then, in one short transaction, the days' rows are replaced.

    Today's rows are written by live messages while this runs: rebuild today only when traffic is quiet.
    """
    totals: dict[tuple[str, date, str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(_SUMS, 0))
    rows = (
        Message.objects.filter(
            pk__gte=_message_id_floor(_day_start(start) - _OUTCOME_LAG),
            pk__lt=_message_id_floor(_day_start(end + timedelta(days=1)) + _OUTCOME_LAG),
            direction=Message.Direction.INBOUND,
            status__in=[Message.Status.ANSWERED, Message.Status.FAILED],
        )
        .values("id", "status", "error_code", "created_at")
        .annotate(
            workspace_id=F("conversation__workspace_id"),
            channel_id=F("conversation__channel_id"),
            answered_at=Min("replies__created_at"),
            reply_count=Count("replies"),
            reply_credits=Sum("replies__credits"),
            reply_input_tokens=Sum("replies__input_tokens"),
            reply_output_tokens=Sum("replies__output_tokens"),
        )
        .order_by()
    )
    for row in rows.iterator(chunk_size=chunk_size):
        answered = row["status"] == Message.Status.ANSWERED
        at = (row["answered_at"] or row["created_at"]) if answered else row["created_at"]
        day = outcome_day(at)
        if not start <= day <= end:
            continue
        total = totals[(row["workspace_id"], day, row["channel_id"], "" if answered else row["error_code"])]
        total["messages"] += 1
        if answered:
            total["replies"] += row["reply_count"]
            total["credits"] += row["reply_credits"] or 0
            total["input_tokens"] += row["reply_input_tokens"] or 0
            total["output_tokens"] += row["reply_output_tokens"] or 0
            if row["answered_at"] is not None:
                milliseconds = max(round((row["answered_at"] - row["created_at"]).total_seconds() * 1000), 0)
                total["agent_ms"] += milliseconds
                total[LATENCY_FIELDS[latency_bucket(milliseconds)]] += 1
    with transaction.atomic():
        MessageDay.objects.filter(day__gte=start, day__lte=end).delete()
        MessageDay.objects.bulk_create(
            [
                MessageDay(workspace_id=workspace_id, day=day, channel_id=channel_id, error_code=code, **values)
                for (workspace_id, day, channel_id, code), values in totals.items()
            ],
            batch_size=500,
        )
    return len(totals)
