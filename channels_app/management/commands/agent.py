"""`manage.py agent set AGENT_ID [--embedding-model M] [--knowledge-max-passages N] [--knowledge-max-chars N]`
(README.md, "Management commands"): the agent's knowledge settings. Prints the agent's settings."""

import argparse
import json

from django.core.management.base import BaseCommand, CommandError

from channels_app.models import AIAgent

KNOWLEDGE_MAX_PASSAGES_LIMIT = 50  # passages given to the agent with one message
KNOWLEDGE_MAX_CHARS_LIMIT = 200_000


def _bounded(name: str, low: int, high: int):  # type: ignore[no-untyped-def]
    def parse(value: str) -> int:
        if not value.isdigit() or not low <= int(value) <= high:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number from {low} to {high}; got {value!r}.")
        return int(value)

    return parse


class Command(BaseCommand):
    help = "Change an AI agent's settings."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{set}")
        setting = actions.add_parser("set", help="The agent's knowledge settings; prints the agent's settings.")
        setting.add_argument("agent_id", metavar="AGENT_ID")
        setting.add_argument(
            "--embedding-model",
            help="A model the agent's OpenAI-compatible provider serves at /v1/embeddings; '' for full-text only.",
        )
        setting.add_argument(
            "--knowledge-max-passages",
            type=_bounded("--knowledge-max-passages", 0, KNOWLEDGE_MAX_PASSAGES_LIMIT),
            help="The most passages given to the agent with each message (0: none).",
        )
        setting.add_argument(
            "--knowledge-max-chars",
            type=_bounded("--knowledge-max-chars", 0, KNOWLEDGE_MAX_CHARS_LIMIT),
            help="The most characters of passages given to the agent with each message.",
        )

    def handle(self, *args, **options):
        agent = AIAgent.objects.filter(pk=options["agent_id"]).first()
        if agent is None:
            raise CommandError(f"No AI agent has the id {options['agent_id']!r}. The admin lists the agents' ids.")
        changed = []
        for option in ("embedding_model", "knowledge_max_passages", "knowledge_max_chars"):
            if options[option] is not None:
                setattr(agent, option, options[option].strip() if option == "embedding_model" else options[option])
                changed.append(option)
        if changed:
            agent.save(update_fields=[*changed, "updated_at"])
        self.stdout.write(
            json.dumps(
                {
                    "id": agent.pk,
                    "name": agent.name,
                    "provider": agent.provider,
                    "model": agent.model,
                    "embeddingModel": agent.embedding_model,
                    "knowledgeMaxPassages": agent.knowledge_max_passages,
                    "knowledgeMaxChars": agent.knowledge_max_chars,
                    "knowledgeLanguage": agent.knowledge_language,
                    "documents": agent.knowledge_documents,
                }
            )
        )
