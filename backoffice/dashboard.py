"""The dashboard's numbers: read from the daily rollup (analytics.models.MessageDay), never from the messages,
so a page costs the same with a thousand messages or a billion.

Four queries, each bounded by the date range (at most DASHBOARD_MAX_DAYS days) and indexed:
1. the range's rollup rows summed per (day, error_code): messages per day by outcome, credits per day, the
   latency histograms (p50/p95 per day), failures by code;
2. the busiest channels (top BUSIEST_CHANNELS by messages in the range);
3. the active conversations now (status OPEN; the one-open-per-contact partial index holds exactly them);
4. the workspaces for the workspace filter.
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db import connection
from django.db.models import Q, Sum

from analytics.models import LATENCY_BUCKETS_MS, LATENCY_FIELDS, MessageDay
from channels_app.models import Workspace
from config.days import FIRST_DAY, LAST_DAY
from conversations.failures import CAUSES, Cause, failure_cause
from conversations.models import Conversation

DASHBOARD_DEFAULT_DAYS = 30
DASHBOARD_MAX_DAYS = 366  # a year on one page: 366 bars are still legible, and the rollup query stays small
BUSIEST_CHANNELS = 10
WORKSPACE_CHOICES_MAX = 500  # the filter is a <select>; past this many, the URL's ?workspace= still works


@dataclass
class DateRange:
    start: date
    end: date
    error: str = ""  # a sentence when the requested range was refused and the default is shown instead

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=offset) for offset in range((self.end - self.start).days + 1)]


def dashboard_range(*, params: dict[str, str], today: date) -> DateRange:
    """The range asked for by `?from=YYYY-MM-DD&to=YYYY-MM-DD` (inclusive, UTC days), else the last
    DASHBOARD_DEFAULT_DAYS days up to `today`. A malformed, reversed or too long range falls back to the
    default, with a sentence saying what to send instead."""
    default = DateRange(start=today - timedelta(days=DASHBOARD_DEFAULT_DAYS - 1), end=today)
    raw_start, raw_end = params.get("from", "").strip(), params.get("to", "").strip()
    if not raw_start and not raw_end:
        return default
    try:
        end = date.fromisoformat(raw_end) if raw_end else today
        start = (
            date.fromisoformat(raw_start)
            if raw_start
            else max(FIRST_DAY, end) - timedelta(days=DASHBOARD_DEFAULT_DAYS - 1)
        )
    except ValueError:
        default.error = "The dates must look like 2026-11-25 (from and to, both included)."
        return default
    if not (FIRST_DAY <= start <= LAST_DAY and FIRST_DAY <= end <= LAST_DAY):
        # bounded before any day arithmetic (a chart's days, an export's next midnight) can leave the calendar
        default.error = f"The dates must lie between {FIRST_DAY} and {LAST_DAY}. Pick days in that range."
        return default
    if start > end:
        default.error = "The range starts after it ends. Pick a start date on or before the end date."
        return default
    if (end - start).days + 1 > DASHBOARD_MAX_DAYS:
        default.error = f"The range is longer than {DASHBOARD_MAX_DAYS} days. Pick a shorter range."
        return default
    return DateRange(start=start, end=end)


def percentile_ms(counts: list[int], fraction: float) -> float | None:
    """The `fraction` percentile of a latency histogram (counts per LATENCY_BUCKETS_MS bucket), interpolated
    linearly inside its bucket; the open last bucket answers its lower bound. None without samples."""
    total = sum(counts)
    if total == 0:
        return None
    rank = fraction * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            lower = 0 if index == 0 else LATENCY_BUCKETS_MS[index - 1]
            if index == len(LATENCY_BUCKETS_MS):
                return float(lower)
            return lower + (LATENCY_BUCKETS_MS[index] - lower) * (rank - seen) / count
        seen += count
    return float(LATENCY_BUCKETS_MS[-1])


@dataclass
class Day:
    day: date
    answered: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # cause key -> messages
    credits: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_FIELDS))

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def messages(self) -> int:
        return self.answered + self.failed_total

    @property
    def p50_ms(self) -> float | None:
        return percentile_ms(self.latency, 0.50)

    @property
    def p95_ms(self) -> float | None:
        return percentile_ms(self.latency, 0.95)


@dataclass
class CodeCount:
    code: str
    cause: Cause
    messages: int


@dataclass
class ChannelCount:
    channel_id: str
    name: str
    workspace_name: str
    messages: int
    failed: int


@dataclass
class Dashboard:
    range: DateRange
    workspace_id: str  # "" for all workspaces
    workspaces: list[tuple[str, str]]  # (id, name) for the filter
    days: list[Day]
    failures: list[CodeCount]  # by code, most first
    channels: list[ChannelCount]  # busiest first
    active_conversations: int
    causes: list[Cause]  # the causes seen in the range, in CAUSES order
    labels: list[tuple[str, int]] = field(default_factory=list)  # (label, conversations), most first

    @property
    def answered(self) -> int:
        return sum(day.answered for day in self.days)

    @property
    def failed(self) -> int:
        return sum(day.failed_total for day in self.days)

    @property
    def messages(self) -> int:
        return self.answered + self.failed

    @property
    def credits(self) -> int:
        return sum(day.credits for day in self.days)

    @property
    def latency(self) -> list[int]:
        return [sum(column) for column in zip(*(day.latency for day in self.days), strict=True)]

    @property
    def p50_ms(self) -> float | None:
        return percentile_ms(self.latency, 0.50)

    @property
    def p95_ms(self) -> float | None:
        return percentile_ms(self.latency, 0.95)

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.messages if self.messages else None


def dashboard_get(*, date_range: DateRange, workspace_id: str = "") -> Dashboard:
    """The dashboard of one workspace (`workspace_id`) or of all of them (""), for `date_range`."""
    rows = MessageDay.objects.filter(day__gte=date_range.start, day__lte=date_range.end)
    conversations = Conversation.objects.filter(status=Conversation.Status.ACTIVE)
    if workspace_id:
        rows = rows.filter(workspace_id=workspace_id)
        conversations = conversations.filter(workspace_id=workspace_id)

    days = {day: Day(day=day) for day in date_range.days}
    by_code: dict[str, int] = {}
    sums: dict[str, Any] = {"n": Sum("messages"), "cr": Sum("credits")}
    sums.update({f"h{index}": Sum(name) for index, name in enumerate(LATENCY_FIELDS)})
    for row in rows.values("day", "error_code").annotate(**sums).order_by():
        day = days[row["day"]]
        if row["error_code"]:
            cause = failure_cause(row["error_code"]).key
            day.failed[cause] = day.failed.get(cause, 0) + row["n"]
            by_code[row["error_code"]] = by_code.get(row["error_code"], 0) + row["n"]
        else:
            day.answered += row["n"]
        day.credits += row["cr"] or 0
        day.latency = [have + (row[f"h{index}"] or 0) for index, have in enumerate(day.latency)]

    channels = [
        ChannelCount(
            channel_id=row["channel_id"],
            name=row["channel__name"],
            workspace_name=row["channel__workspace__name"],
            messages=row["total"],
            failed=row["failed"] or 0,
        )
        for row in rows.values("channel_id", "channel__name", "channel__workspace__name")
        .annotate(total=Sum("messages"), failed=Sum("messages", filter=~Q(error_code="")))
        .order_by("-total", "channel_id")[:BUSIEST_CHANNELS]
    ]
    seen = {cause for day in days.values() for cause in day.failed}
    return Dashboard(
        range=date_range,
        workspace_id=workspace_id,
        workspaces=list(Workspace.objects.order_by("name", "id").values_list("id", "name")[:WORKSPACE_CHOICES_MAX]),
        days=list(days.values()),
        failures=sorted(
            (CodeCount(code=code, cause=failure_cause(code), messages=count) for code, count in by_code.items()),
            key=lambda item: (-item.messages, item.code),
        ),
        channels=channels,
        active_conversations=conversations.count(),
        causes=[cause for cause in CAUSES if cause.key in seen],
        labels=conversations_by_label(date_range=date_range, workspace_id=workspace_id),
    )


TOP_LABELS = 10


def conversations_by_label(*, date_range: DateRange, workspace_id: str = "") -> list[tuple[str, int]]:
    """The labels of the conversations with a message in the range (the agent's add_conversation_labels),
    with how many conversations carry each, most first: one query."""
    table = Conversation._meta.db_table
    start = datetime.combine(date_range.start, time.min, tzinfo=UTC)
    end = datetime.combine(date_range.end + timedelta(days=1), time.min, tzinfo=UTC)
    sql = (
        f"SELECT label, count(*) FROM {table} c CROSS JOIN LATERAL jsonb_array_elements_text(c.labels) AS label "
        "WHERE c.labels <> '[]'::jsonb AND c.last_message_at >= %s AND c.last_message_at < %s"
        + (" AND c.workspace_id = %s" if workspace_id else "")
        + " GROUP BY label ORDER BY count(*) DESC, label LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [start, end, *([workspace_id] if workspace_id else []), TOP_LABELS])
        return [(label, count) for label, count in cursor.fetchall()]
