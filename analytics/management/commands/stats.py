"""`manage.py stats rebuild [--from YYYY-MM-DD] [--to YYYY-MM-DD]`: recompute the dashboard's daily rollup from
the messages (analytics.stats.message_stats_rebuild).

Run it once after deploying the rollup, for the history before it; later only to mend days. By default it
rebuilds every day from the first message to yesterday: today's rows are being written by live messages,
so rebuild today (`--to` today) only when traffic is quiet.
"""

import argparse
from datetime import date, timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from analytics.stats import message_stats_rebuild
from conversations.models import Message


def day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date. Send a UTC day like 2026-11-25.") from None


class Command(BaseCommand):
    help = "The dashboard's daily rollup: `rebuild` recomputes days from the messages."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{rebuild}")
        rebuild = actions.add_parser("rebuild", help="Recompute the rollup's days from the messages.")
        rebuild.add_argument("--from", dest="start", type=day, help="First day (default: the first message's).")
        rebuild.add_argument("--to", dest="end", type=day, help="Last day, included (default: yesterday).")

    def handle(self, *args, action: str, start: date | None, end: date | None, **options):
        today = timezone.now().date()
        end = end or today - timedelta(days=1)
        if start is None:
            first = Message.objects.order_by("pk").values_list("created_at", flat=True).first()
            start = first.date() if first else end
        if start > end:
            self.stderr.write(f"Nothing to rebuild: {start} is after {end}.", style_func=str)
            return
        written = message_stats_rebuild(start=start, end=end)
        self.stdout.write(f"Rebuilt {start} to {end}: {written} rows.")
