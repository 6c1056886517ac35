from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = "Conversations"

    def preload(self) -> None:
        """Called by config/wsgi.py when a web process starts: the OpenAI SDK takes about a second to import,
        so it is loaded with the worker, not on the first request to an OpenAI-compatible agent."""
        import conversations.agents.openai_agent  # noqa: F401
