"""`manage.py credits grant --workspace W --amount N` (README.md, "Management commands").

The new balance is the only thing printed on stdout, so a script can take it with `$(...)`.
"""

import argparse

from django.core.management.base import BaseCommand, CommandError

from billing.credits import CREDITS_GRANT_MAX, credits_grant
from channels_app.services import workspace_get
from config.errors import ApplicationError
from config.text import ascii_digits


def amount(value: str) -> int:
    number = int(value) if ascii_digits(value) else 0
    if not 1 <= number <= CREDITS_GRANT_MAX:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a number of credits to grant. Send a whole number from 1 to {CREDITS_GRANT_MAX:_}."
        )
    return number


class Command(BaseCommand):
    help = "Credits of a workspace: `grant` adds credits through a ledger entry."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{grant}")
        grant = actions.add_parser("grant", help="Add N credits to a workspace; prints the new balance.")
        grant.add_argument("--workspace", required=True, help="The workspace's id or slug.")
        grant.add_argument("--amount", required=True, type=amount, metavar="N", help="Credits to add (N >= 1).")

    def handle(self, *args, action: str, workspace: str, amount: int, **options):
        try:
            entry = credits_grant(workspace=workspace_get(ref=workspace), amount=amount, note="manage.py credits grant")
        except ApplicationError as error:
            raise CommandError(error.message) from error
        self.stdout.write(str(entry.balance_after))
        self.stderr.write(
            f"Granted {amount} credits to workspace {entry.workspace.slug} (ledger entry {entry.pk}); "
            f"the balance is now {entry.balance_after}.",
            style_func=str,
        )
