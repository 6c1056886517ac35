"""The read API's usage figures (GET /api/v1/usage): the ledger's charges per UTC day."""

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate

from billing.models import UsageLedgerEntry


def usage_days(*, workspace_id: str, first: date, last: date) -> list[dict[str, Any]]:
    """Every UTC day from `first` to `last` (inclusive, oldest first) with the workspace's CHARGE entries of
    that day: how many (one per paid reply), the credits they took and their tokens. Days without charges
    are zeros. One grouped query on the ledger_ws_created index; the figures are sums of the ledger's rows,
    so they agree with the admin's ledger to the credit."""
    start = datetime.combine(first, time.min, tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
    rows = (
        UsageLedgerEntry.objects.filter(
            workspace_id=workspace_id,
            kind=UsageLedgerEntry.Kind.CHARGE,
            created_at__gte=start,
            created_at__lt=end,
        )
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(
            messages=Count("id"),
            spent=Sum("delta"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
        )
        .order_by("day")
    )
    by_day = {row["day"]: row for row in rows}
    days = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        row = by_day.get(day)
        days.append(
            {
                "date": day.isoformat(),
                "messages": row["messages"] if row else 0,
                "credits": -(row["spent"] or 0) if row else 0,
                "inputTokens": row["input_tokens"] or 0 if row else 0,
                "outputTokens": row["output_tokens"] or 0 if row else 0,
            }
        )
    return days
