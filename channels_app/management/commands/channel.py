"""`manage.py channel set` (README "Management commands"): a channel's settings, printed after the change.

An unknown channel or a value out of range ends with a sentence saying what to send instead and exit status 1.
"""

from django.core.management.base import BaseCommand, CommandError

from channels_app.models import Channel
from channels_app.services import channel_settings_set
from config.errors import ApplicationError


class Command(BaseCommand):
    help = "Change a channel's settings (burst mode and window, inactivity timeout); prints its settings."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{set}")
        setting = actions.add_parser("set", help="Change the settings given; prints the channel's settings.")
        setting.add_argument("channel_id", metavar="CHANNEL_ID")
        setting.add_argument(
            "--burst-mode",
            metavar="queue|latest",
            help="queue: every message is answered, in order; latest: a newer message supersedes the earlier "
            "unanswered ones.",
        )
        setting.add_argument(
            "--burst-window-ms",
            type=int,
            metavar="N",
            help="latest mode: how long the agent waits after a message for a newer one (0-15000 ms).",
        )
        setting.add_argument(
            "--inactivity-timeout",
            type=int,
            metavar="SECONDS",
            help="An active conversation idle for longer is closed; 0: never.",
        )

    def handle(self, *args, **options):
        try:
            channel = channel_settings_set(
                channel_id=options["channel_id"],
                burst_mode=options["burst_mode"],
                burst_window_ms=options["burst_window_ms"],
                inactivity_timeout_seconds=options["inactivity_timeout"],
            )
        except ApplicationError as error:
            raise CommandError(error.message) from error
        self.stdout.write(settings_text(channel))


def settings_text(channel: Channel) -> str:
    return "\n".join(
        [
            f"channel: {channel.pk} ({channel.name})",
            f"burst mode: {channel.burst_mode}",
            f"burst window: {channel.burst_window_ms} ms",
            f"inactivity timeout: {channel.inactivity_timeout_seconds} s",
        ]
    )
