from django.apps import AppConfig
from django.core import checks


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = "Conversations"

    def ready(self) -> None:
        from conversations.agents.checks import agent_backends_check, agent_providers_in_database_check

        checks.register(agent_backends_check)
        checks.register(agent_providers_in_database_check, checks.Tags.database)

    def preload(self) -> None:
        """Called by config/wsgi.py when a web process starts: the OpenAI SDK takes about a second to import,
        so it is loaded with the worker, not on the first request to an OpenAI-compatible agent."""
        import conversations.agents.openai_agent  # noqa: F401
