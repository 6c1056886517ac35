"""`manage.py agent set|actions|tool` (README "Management commands", "The agent's knowledge", "Actions",
"HTTP tools"): one command for an agent's settings, here in the top layer because `tool` writes through
webhooks/tools.py.

`set` changes the agent's knowledge settings given and prints the agent's settings as JSON.

`tool add` prints only the tool's signing secret on stdout (once: it is stored encrypted), so a script can
take it with `$(...)`; what happened is told on stderr. A refused definition or an unknown agent ends with the
reason and exit status 1.
"""

import argparse
import json

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from channels_app.models import AgentTool, AIAgent
from channels_app.validators import BUILTIN_ACTIONS
from config.text import ascii_digits
from webhooks.tools import agent_tool_put

KNOWLEDGE_MAX_PASSAGES_LIMIT = 50  # passages given to the agent with one message
KNOWLEDGE_MAX_CHARS_LIMIT = 200_000
KNOWLEDGE_SETTINGS = ("embedding_model", "knowledge_max_passages", "knowledge_max_chars")


def _bounded(name: str, low: int, high: int):  # type: ignore[no-untyped-def]
    def parse(value: str) -> int:
        if not ascii_digits(value) or not low <= int(value) <= high:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number from {low} to {high}; got {value!r}.")
        return int(value)

    return parse


def _names(raw: str | None) -> list[str]:
    return [name.strip() for name in (raw or "").split(",") if name.strip()]


class Command(BaseCommand):
    help = "Change an agent's knowledge settings, enable or disable its built-in actions, add or remove its HTTP tools."

    def add_arguments(self, parser):
        commands = parser.add_subparsers(dest="command", required=True, metavar="{set,actions,tool}")
        setting = commands.add_parser("set", help="The agent's knowledge settings; prints the agent's settings.")
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
        actions = commands.add_parser("actions", help="Enable or disable built-in actions; prints those enabled.")
        actions.add_argument("agent_id", metavar="AGENT_ID")
        actions.add_argument("--enable", metavar="NAME[,NAME...]", help=f"Of: {', '.join(BUILTIN_ACTIONS)}.")
        actions.add_argument("--disable", metavar="NAME[,NAME...]")

        tool = commands.add_parser("tool", help="The agent's HTTP tools.").add_subparsers(
            dest="tool_command", required=True, metavar="{add,remove}"
        )
        add = tool.add_parser("add", help="Add or replace a tool; prints its new signing secret once.")
        add.add_argument("agent_id", metavar="AGENT_ID")
        add.add_argument("--name", required=True, help="[A-Za-z0-9_-]{1,64}")
        add.add_argument("--description", required=True, help="What the tool does, for the model.")
        add.add_argument("--method", required=True, choices=["GET", "POST"])
        add.add_argument("--url", required=True, help="A public http(s) URL (the webhook address rules).")
        add.add_argument("--parameters", required=True, metavar="JSON", help="A JSON Schema object.")
        add.add_argument("--header", default="", metavar="NAME", help="A header sent with each call.")
        add.add_argument("--header-env", default="", metavar="VAR", help="The environment variable of its value.")
        add.add_argument("--timeout", type=float, default=10.0, help="Seconds for the whole call (at most 30).")
        remove = tool.add_parser("remove", help="Remove a tool.")
        remove.add_argument("agent_id", metavar="AGENT_ID")
        remove.add_argument("name", metavar="NAME")

    def handle(self, *args, **options):
        agent = AIAgent.objects.filter(pk=options["agent_id"]).first()
        if agent is None:
            raise CommandError(f"No agent {options['agent_id']!r}. Give an agent's id (ag_...).")
        if options["command"] == "set":
            self._set(agent, options)
        elif options["command"] == "actions":
            self._actions(agent, enable=_names(options["enable"]), disable=_names(options["disable"]))
        elif options["tool_command"] == "add":
            self._tool_add(agent, options)
        else:
            deleted, _ = AgentTool.objects.filter(agent=agent, name=options["name"]).delete()
            if not deleted:
                raise CommandError(f"Agent {agent.pk} has no tool named {options['name']!r}.")
            self.stderr.write(f"Removed the tool {options['name']} of agent {agent.pk}.", style_func=str)

    def _set(self, agent: AIAgent, options: dict) -> None:
        changed = [name for name in KNOWLEDGE_SETTINGS if options[name] is not None]
        for name in changed:
            setattr(agent, name, options[name].strip() if name == "embedding_model" else options[name])
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

    def _actions(self, agent: AIAgent, *, enable: list[str], disable: list[str]) -> None:
        unknown = sorted(set(enable + disable) - set(BUILTIN_ACTIONS))
        if unknown:
            raise CommandError(f"Unknown actions: {', '.join(unknown)}. Choose from: {', '.join(BUILTIN_ACTIONS)}.")
        with transaction.atomic():
            agent = AIAgent.objects.select_for_update().get(pk=agent.pk)
            enabled = [name for name in agent.actions or [] if name not in disable]
            enabled += [name for name in enable if name not in enabled and name not in disable]
            agent.actions = enabled
            agent.save(update_fields=["actions", "updated_at"])
        self.stdout.write(",".join(enabled))

    def _tool_add(self, agent: AIAgent, options: dict) -> None:
        try:
            parameters = json.loads(options["parameters"])
        except ValueError:
            raise CommandError("--parameters is not JSON. Give a JSON Schema object.") from None
        try:
            secret = agent_tool_put(
                agent_id=agent.pk,
                name=options["name"],
                description=options["description"],
                method=options["method"],
                url=options["url"],
                parameters=parameters,
                header_name=options["header"],
                header_env_var=options["header_env"],
                timeout_seconds=options["timeout"],
            )
        except ValueError as error:
            raise CommandError(f"The tool was not saved: {error}") from None
        self.stdout.write(secret)
        self.stderr.write(
            f"Tool {options['name']} of agent {agent.pk} saved. Its signing secret is shown only this once: "
            "verify each call's webhook-signature with it.",
            style_func=str,
        )
