"""`manage.py workspace create --name N --slug S [--credits N]` (README.md, "Management commands"): a new
tenant without the admin, for integrators who script their set-up.

The workspace's id is the only thing printed on stdout, so a script can take it with `$(...)`. Here in
`billing` rather than `channels_app`, which holds workspaces: the starting credits are a ledger entry.
"""

import argparse

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_slug
from django.db import transaction

from billing.credits import CREDITS_GRANT_MAX, credits_grant
from channels_app.models import Workspace
from channels_app.services import workspace_create
from config.errors import ApplicationError
from config.ids import WORKSPACE_ID_PREFIX

_NAME_MAX = Workspace._meta.get_field("name").max_length or 0
_SLUG_MAX = Workspace._meta.get_field("slug").max_length or 0
# A workspace id's prefix: `--workspace` of the other commands takes an id or a slug, the id first, so a
# slug shaped like an id could name another workspace.
_ID_PREFIX = f"{WORKSPACE_ID_PREFIX}_"


def name(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= _NAME_MAX or "\x00" in value:
        raise argparse.ArgumentTypeError(f"Send a name of 1 to {_NAME_MAX} characters (no NUL).")
    return value


def slug(value: str) -> str:
    try:
        validate_slug(value)
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a slug. Send 1 to {_SLUG_MAX} letters, digits, hyphens or underscores."
        ) from None
    if len(value) > _SLUG_MAX or value.startswith(_ID_PREFIX):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a slug. Send 1 to {_SLUG_MAX} letters, digits, hyphens or underscores, "
            f"not starting with {_ID_PREFIX!r} (a workspace id's prefix)."
        )
    return value


def credits(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number <= CREDITS_GRANT_MAX:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a number of credits. Send a whole number from 0 to {CREDITS_GRANT_MAX:_}."
        )
    return number


class Command(BaseCommand):
    help = "Workspaces (tenants): `create` makes one; prints its id."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create}")
        create = actions.add_parser("create", help="A new workspace; prints its id. Exit 1 when the slug is taken.")
        create.add_argument("--name", required=True, type=name, help="The workspace's name (shown in the admin).")
        create.add_argument("--slug", required=True, type=slug, help="Its slug, unique: what --workspace takes.")
        create.add_argument(
            "--credits", type=credits, default=0, metavar="N", help="Starting credits, a ledger entry (default 0)."
        )

    def handle(self, *args, action: str, name: str, slug: str, credits: int, **options):
        try:
            with transaction.atomic():  # a workspace with its starting credits, or nothing
                workspace = workspace_create(name=name, slug=slug)
                if credits:
                    credits_grant(workspace=workspace, amount=credits, note="manage.py workspace create")
        except ApplicationError as error:
            raise CommandError(error.message) from error
        self.stdout.write(workspace.pk)
        self.stderr.write(
            f"Created workspace {workspace.slug} ({workspace.pk}) with {credits} credits. "
            f"Next: .venv/bin/python manage.py apikey create --workspace {workspace.slug}",
            style_func=str,
        )
