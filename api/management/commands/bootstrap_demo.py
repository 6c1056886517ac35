import json
import os

from django.conf import settings
from django.core.management.base import BaseCommand

from api.maintenance.demo import demo_base_url, demo_bootstrap, demo_key_file

DEFAULT_BIND = "127.0.0.1:8000"


class Command(BaseCommand):
    help = "Create (once) the demo workspace, API channel, agent, credits and API key; print how to call it."

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON object: workspaceId, channelId, apiKey."
        )
        parser.add_argument(
            "--bind",
            default=None,
            help=f"The address the server listens on, for the printed curl line (default: $BIND, else {DEFAULT_BIND}).",
        )

    def handle(self, *args, **options):
        key_file = demo_key_file(base_dir=settings.BASE_DIR, database=settings.DATABASES["default"])
        demo = demo_bootstrap(key_file=key_file)
        if options["json"]:
            self.stdout.write(json.dumps(demo))
            return
        base_url = demo_base_url(bind=options["bind"] or os.environ.get("BIND") or DEFAULT_BIND)
        body = json.dumps(
            {
                "type": "TEXT",
                "contactIdentifier": "user@example.com",
                "contactName": "User Name",
                "content": {"text": {"body": "How long does shipping take?"}},
            }
        )
        self.stdout.write(
            f"Channel id: {demo['channelId']}\n"
            f"API key:    {demo['apiKey']}\n\n"
            "Try it:\n"
            f"curl -s -X POST {base_url}/api/v1/channels/{demo['channelId']}/messages \\\n"
            f"  -H 'X-API-Key: {demo['apiKey']}' -H 'Content-Type: application/json' \\\n"
            f"  -d '{body}'\n"
        )
