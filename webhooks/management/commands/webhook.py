"""`manage.py webhook set|secret|deliver` (README "Management commands").

A new signing secret is the only thing `set` and `secret` print on stdout, so a script can take it with
`$(...)`; what happened is told on stderr. A refused URL, an unknown channel or a channel without a
webhook ends with the reason and exit status 1.
"""

import shlex
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError

from config.errors import ApplicationError
from webhooks.address import ALLOW_SETTING
from webhooks.delivery import deliveries_due_claim, delivery_attempt
from webhooks.errors import WebhookUrlNotAllowed
from webhooks.services import webhook_secret_rotate, webhook_set


class Command(BaseCommand):
    help = "Set a channel's webhook URL, give it a new signing secret, or send the due deliveries now."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{set,secret,deliver}")

        setting = actions.add_parser(
            "set", help="Point the channel's webhook at URL with a new signing secret; prints the secret once."
        )
        setting.add_argument("channel_id", metavar="CHANNEL_ID")
        setting.add_argument("url", metavar="URL", help="A public http:// or https:// URL.")

        secret = actions.add_parser(
            "secret", help="A new signing secret for the channel's webhook (printed once); the old one stops at once."
        )
        secret.add_argument("channel_id", metavar="CHANNEL_ID")

        actions.add_parser(
            "deliver",
            help="Attempt every due delivery now, in this process (for a server without a broker that was "
            "stopped with deliveries pending).",
        )

    def handle(self, *args, **options):
        try:
            getattr(self, f"_{options['action']}")(**options)
        except ApplicationError as error:
            raise CommandError(error.message) from error

    def _note(self, text: str) -> None:
        self.stderr.write(text, style_func=str)

    def _set(self, *, channel_id: str, url: str, **_):
        try:
            secret = webhook_set(channel_id=channel_id, url=url)
        except WebhookUrlNotAllowed as error:
            if error.details.get("reason") != "address":
                raise
            # The setting is read from this command's environment, not the server's: say how to pass it.
            host = urlsplit(url.strip()).hostname or ""
            raise CommandError(
                f"{error.message} For this command: {ALLOW_SETTING}={shlex.quote(host)} .venv/bin/python "
                f"manage.py webhook set {shlex.quote(channel_id)} {shlex.quote(url)}"
            ) from error
        self.stdout.write(secret)
        self._note(
            f"The webhook of channel {channel_id} is {url.strip()}. Its signing secret is shown only this "
            "once: verify each event's webhook-signature with it."
        )

    def _secret(self, *, channel_id: str, **_):
        secret = webhook_secret_rotate(channel_id=channel_id)
        self.stdout.write(secret)
        self._note(
            f"New signing secret for the webhook of channel {channel_id}, shown only this once; the old "
            "secret signs nothing from now on."
        )

    def _deliver(self, **_):
        attempts = succeeded = 0
        while claims := deliveries_due_claim():
            for delivery_id, token in claims:
                attempt = delivery_attempt(delivery_id=delivery_id, token=token)
                if attempt is not None:
                    attempts += 1
                    succeeded += attempt.outcome == attempt.Outcome.SUCCEEDED
        self.stdout.write(f"Attempts: {attempts} ({succeeded} delivered, {attempts - succeeded} to retry or failed)")
