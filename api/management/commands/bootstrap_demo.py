import json

from django.conf import settings
from django.core.management.base import BaseCommand

from api.demo import demo_bootstrap


class Command(BaseCommand):
    help = "Create (once) the demo workspace, API channel, agent, credits and API key; print how to call it."

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON object: workspaceId, channelId, apiKey."
        )

    def handle(self, *args, **options):
        demo = demo_bootstrap(key_file=settings.BASE_DIR / "var" / "demo-key.json")
        if options["json"]:
            self.stdout.write(json.dumps(demo))
            return
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
            f"curl -s -X POST http://127.0.0.1:8000/api/v1/channels/{demo['channelId']}/messages \\\n"
            f"  -H 'X-API-Key: {demo['apiKey']}' -H 'Content-Type: application/json' \\\n"
            f"  -d '{body}'\n"
        )
