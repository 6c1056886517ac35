"""`manage.py apikey create|list|rotate|revoke` (README.md, "Management commands").

A new key is the only thing `create` and `rotate` print on stdout, so a script can take it with `$(...)`;
what happened is told on stderr.
"""

import argparse
import re
from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from channels_app.services import (
    APIKEY_ROTATION_GRACE,
    APIKEY_ROTATION_GRACE_MAX,
    apikey_create,
    apikey_get,
    apikey_list,
    apikey_revoke,
    apikey_rotate,
    workspace_get,
)
from config.errors import ApplicationError

_DURATION = re.compile(r"(\d{1,10})([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: str) -> timedelta:
    """`0`, `90` (seconds), `90s`, `30m`, `24h`, `7d`."""
    match = _DURATION.fullmatch(value.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a duration. Use seconds or a number with s, m, h or d: 0, 3600, 30m, 24h, 7d."
        )
    grace = timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if grace > APIKEY_ROTATION_GRACE_MAX:
        raise argparse.ArgumentTypeError(
            f"{value!r} is longer than {APIKEY_ROTATION_GRACE_MAX.days} days. Revoke or rotate the key later "
            "instead of leaving the old key working that long."
        )
    return grace


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


class Command(BaseCommand):
    help = "Create, list, rotate and revoke a workspace's API keys."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create,list,rotate,revoke}")

        create = actions.add_parser("create", help="A new key for a workspace; prints the key once.")
        create.add_argument("--workspace", required=True, help="The workspace's id or slug.")
        create.add_argument("--name", default="default", help="A label for the key (50 characters at most).")

        listing = actions.add_parser("list", help="The workspace's keys (never their secrets).")
        listing.add_argument("--workspace", required=True, help="The workspace's id or slug.")

        rotate = actions.add_parser(
            "rotate", help="A new key for the same workspace; the old key keeps working for the grace period."
        )
        rotate.add_argument("prefix", help="The key's prefix: the part before the dot.")
        rotate.add_argument(
            "--grace",
            type=duration,
            default=APIKEY_ROTATION_GRACE,
            metavar="DURATION",
            help="How long the old key keeps working: 0 (not at all), seconds, or 30m, 24h, 7d. Default 24h.",
        )

        revoke = actions.add_parser("revoke", help="The key fails with 401 at once.")
        revoke.add_argument("prefix", help="The key's prefix: the part before the dot.")

    def handle(self, *args, **options):
        try:
            getattr(self, f"_{options['action']}")(**options)
        except ApplicationError as error:
            raise CommandError(error.message) from error

    def _note(self, text: str) -> None:
        self.stderr.write(text, style_func=str)

    def _create(self, *, workspace: str, name: str, **_):
        api_key, key = apikey_create(workspace=workspace_get(ref=workspace), name=name)
        self.stdout.write(key)
        self._note(
            f"Created API key {api_key.prefix} ({api_key.name}) for workspace {api_key.workspace.slug}. "
            "It is shown only this once and stored only as a hash: keep it now."
        )

    def _list(self, *, workspace: str, **_):
        found = workspace_get(ref=workspace)
        rows = [
            [
                api_key.prefix,
                api_key.name,
                when(api_key.created),
                when(api_key.last_used_at),
                when(api_key.expiry_date) + (" (expired)" if api_key.has_expired else ""),
                "yes" if api_key.revoked else "no",
            ]
            for api_key in apikey_list(workspace=found)
        ]
        if not rows:
            self.stdout.write(
                f"Workspace {found.slug} has no API keys. Create one with "
                f"`manage.py apikey create --workspace {found.slug}`."
            )
            return
        header = ["PREFIX", "NAME", "CREATED", "LAST USED", "EXPIRES", "REVOKED"]
        widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
        for row in [header, *rows]:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    def _rotate(self, *, prefix: str, grace: timedelta, **_):
        api_key, key = apikey_rotate(prefix=prefix, grace=grace)
        self.stdout.write(key)
        expiry = apikey_get(prefix=prefix).expiry_date
        old = (
            f"the old key {prefix} fails with 401 from now on"
            if expiry is None or expiry <= timezone.now()
            else (f"the old key {prefix} keeps working until {when(expiry)}, then fails with 401")
        )
        self._note(
            f"New API key {api_key.prefix} for workspace {api_key.workspace.slug}; {old}. "
            "The new key is shown only this once."
        )

    def _revoke(self, *, prefix: str, **_):
        api_key = apikey_revoke(prefix=prefix)
        self.stdout.write(
            f"Revoked API key {api_key.prefix} ({api_key.name}) of workspace "
            f"{api_key.workspace.slug}: it fails with 401 from now on."
        )
