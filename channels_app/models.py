from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from django.utils.module_loading import import_string
from rest_framework_api_key.models import AbstractAPIKey

from channels_app.validators import API_KEY_ENV_VAR_PATTERN, TOOL_NAME_PATTERN, TOOL_TIMEOUT_MAX_SECONDS
from config import ids


class Workspace(models.Model):
    """A tenant. Its credit balance is the sum of its ledger; `credit_reserved` is held by messages in flight."""

    id = models.CharField(primary_key=True, max_length=40, default=ids.workspace_id, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    credit_balance = models.BigIntegerField(default=0, editable=False)
    credit_reserved = models.BigIntegerField(default=0, editable=False)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute per API key; empty for the platform default."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(credit_balance__gte=0), name="workspace_balance_not_negative"),
            models.CheckConstraint(condition=Q(credit_reserved__gte=0), name="workspace_reserved_not_negative"),
        ]

    def __str__(self) -> str:
        return self.name


class WorkspaceApiKey(AbstractAPIKey):
    """A workspace's API key: `prefix.secret`, stored as a SHA-512 hash (djangorestframework-api-key)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"


# PostgreSQL's text search configurations (`SELECT cfgname FROM pg_ts_config`, the same in 15 and later): the
# language an agent's documents are indexed and searched in (docs/architecture.md, "The agent's knowledge").
KNOWLEDGE_LANGUAGES = (
    "simple arabic armenian basque catalan danish dutch english finnish french german greek hindi hungarian "
    "indonesian irish italian lithuanian nepali norwegian portuguese romanian russian serbian spanish swedish "
    "tamil turkish yiddish"
).split()


# A new agent's provider: offline and needing nothing configured. settings.AGENT_BACKENDS must name it
# (system check agents.E003).
DEFAULT_AGENT_PROVIDER = "builtin"


def agent_provider_choices() -> list[tuple[str, str]]:
    """AIAgent.provider's choices: the providers of settings.AGENT_BACKENDS (conversations/agents/base.py),
    each labelled by its backend's `label`.

    A callable (Django 5's callable choices): the migration refers to this function, not to a copy of the
    list, so a provider added to the setting needs no migration.
    """
    choices = []
    for name, path in settings.AGENT_BACKENDS.items():
        try:
            label = str(getattr(import_string(path), "label", name))
        except ImportError:
            label = name  # system check agents.E001 reports the path
        choices.append((name, label))
    return choices


class AIAgent(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=ids.agent_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=200)
    instructions = models.TextField(blank=True, help_text="The system prompt.")
    # The providers are the names of settings.AGENT_BACKENDS (conversations/agents/base.py).
    provider = models.CharField(max_length=20, choices=agent_provider_choices, default=DEFAULT_AGENT_PROVIDER)
    model = models.CharField(max_length=200, blank=True)
    base_url = models.URLField(max_length=500, blank=True, help_text="OpenAI-compatible endpoint, ending in /v1.")
    api_key_env_var = models.CharField(
        max_length=100,
        blank=True,
        validators=[
            RegexValidator(
                API_KEY_ENV_VAR_PATTERN,
                message="Name an environment variable in capitals that ends in _API_KEY, e.g. OPENAI_API_KEY.",
            )
        ],
        help_text="Name of the environment variable that holds the provider key (the key is never stored). "
        "Capital letters, digits and underscores, ending in _API_KEY (e.g. OPENAI_API_KEY or "
        "LLM_API_KEY): the value goes to the base URL as a bearer token, so no other variable may "
        "be named. Empty: the platform's LLM_API_KEY when the agent uses the platform's endpoint, "
        "else no key.",
    )
    temperature = models.FloatField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    timeout_seconds = models.FloatField(default=60.0)
    transcribe_audio = models.BooleanField(default=False)
    transcription_model = models.CharField(
        max_length=200,
        blank=True,
        help_text="The speech-to-text model voice messages go to when transcribe_audio is on (the chat model "
        "cannot transcribe). Empty: the platform's LLM_TRANSCRIPTION_MODEL (default whisper-1).",
    )
    greeting_text = models.TextField(blank=True, default="Hello! How can I help you today?")
    fallback_text = models.TextField(
        blank=True, default="I'm sorry, I don't have an answer to that yet. Could you rephrase your question?"
    )
    split_threshold_chars = models.PositiveIntegerField(
        default=600, help_text="A reply longer than this is split into several messages at paragraph breaks."
    )
    history_max_messages = models.PositiveIntegerField(
        default=20, help_text="The most messages the agent sees, the new one included; older ones are left out."
    )
    history_max_chars = models.PositiveIntegerField(
        default=12000,
        help_text="The most characters of message text (bodies, captions, file names, media URLs) the agent "
        "sees, the new message included; older messages are left out first. The new message is "
        "always sent.",
    )
    credit_cost_per_reply = models.PositiveIntegerField(default=1)
    credit_cost_per_1k_tokens = models.PositiveIntegerField(default=0)
    # The agent's knowledge (README "The agent's knowledge"): its documents live in the knowledge app.
    embedding_model = models.CharField(
        max_length=200,
        blank=True,
        help_text="A model the agent's OpenAI-compatible provider serves at /v1/embeddings: passages and "
        "questions are embedded and ranked with it as well as by full-text search. Empty: full-text only.",
    )
    knowledge_max_passages = models.PositiveIntegerField(
        default=4, help_text="The most passages of the agent's documents given to it with each message."
    )
    knowledge_max_chars = models.PositiveIntegerField(
        default=6000, help_text="The most characters of passages given to the agent with each message."
    )
    knowledge_language = models.CharField(
        max_length=20,
        choices=[(name, name) for name in KNOWLEDGE_LANGUAGES],
        default="english",
        help_text="The language of the agent's documents (PostgreSQL's text search configuration): words are "
        "reduced to their stems and common words left out in it. 'simple' keeps every word as written.",
    )
    # Kept by the knowledge app with each document written or deleted, in the same transaction: the channel's
    # query reads them with the agent, so a message to an agent without passages costs no statement more.
    knowledge_documents = models.PositiveIntegerField(default=0, editable=False)
    knowledge_passages = models.PositiveIntegerField(default=0, editable=False)
    # The built-in actions the agent may use (BUILTIN_ACTIONS; README "Actions"), in the order enabled.
    actions = models.JSONField(
        default=list, blank=True, help_text="Built-in actions the agent may take (README, Actions)."
    )
    # Whether it has HTTP tools (`agent_tool_changed` keeps it): an agent without any reads none per message.
    has_tools = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "AI agent"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        """An existing agent's save never writes the knowledge counters: the knowledge app keeps them with
        each document written, and this instance's copy may be older than the row's."""
        if not self._state.adding and kwargs.get("update_fields") is None and not kwargs.get("force_insert"):
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name not in KNOWLEDGE_COUNTERS
            ]
        super().save(*args, **kwargs)


KNOWLEDGE_COUNTERS = ("knowledge_documents", "knowledge_passages")


class AgentTool(models.Model):
    """An HTTP tool of an agent (README "HTTP tools"): what the model is told (name, description, parameters)
    and where a call goes (method, URL under the webhook address rules, one optional header whose value is
    read from the environment variable `header_env_var` at call time, never stored). Each tool signs its
    calls with its own Standard Webhooks secret, stored encrypted (webhooks/secret.py)."""

    class Method(models.TextChoices):
        GET = "GET", "GET"
        POST = "POST", "POST"

    id = models.CharField(primary_key=True, max_length=40, default=ids.tool_id, editable=False)
    agent = models.ForeignKey(AIAgent, on_delete=models.CASCADE, related_name="tools", db_index=False)
    name = models.CharField(
        max_length=64, validators=[RegexValidator(TOOL_NAME_PATTERN, "Use 1-64 of A-Z a-z 0-9 _ -.")]
    )
    description = models.TextField(help_text="What the tool does, for the model.")
    method = models.CharField(max_length=4, choices=Method.choices, default=Method.GET)
    url = models.URLField(max_length=2048)
    parameters = models.JSONField(default=dict, help_text="A JSON Schema object (the strict subset).")
    header_name = models.CharField(max_length=100, blank=True)
    header_env_var = models.CharField(
        max_length=100,
        blank=True,
        validators=[RegexValidator(r"^[A-Z][A-Z0-9_]*\Z", "An environment variable name in capitals.")],
        help_text="The environment variable whose value the header carries (never stored).",
    )
    secret_encrypted = models.BinaryField(editable=False)
    timeout_seconds = models.FloatField(
        default=10.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(TOOL_TIMEOUT_MAX_SECONDS)],
        help_text=f"The whole call, at most {TOOL_TIMEOUT_MAX_SECONDS:g} s (and always within the agent's timeout).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "HTTP tool"
        ordering = ["agent", "name"]
        constraints = [models.UniqueConstraint(fields=["agent", "name"], name="agent_tool_unique_name")]

    def __str__(self) -> str:
        return self.name


@receiver([post_save, post_delete], sender=AgentTool)
def agent_tool_changed(sender: type[AgentTool], instance: AgentTool, **kwargs: object) -> None:
    """Move the agent's `updated_at` on every save or delete of one of its tools (each process caches an
    agent's tools per (agent id, updated_at), conversations/selectors.py), and keep `has_tools`."""
    AIAgent.objects.filter(pk=instance.agent_id).update(
        updated_at=timezone.now(), has_tools=AgentTool.objects.filter(agent_id=instance.agent_id).exists()
    )


class Team(models.Model):
    """A group of a workspace's channels (support, sales, ...). The messages endpoint names a channel's team
    in `conversation.teamId` / `teamName`, as Blubash's response does; it changes nothing else."""

    id = models.CharField(primary_key=True, max_length=40, default=ids.team_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="teams")
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


# README "Bursts of short messages": a burst's wait for a newer message (`Channel.burst_window_ms`) is at most
# this long, and so is the wait of a contact who never stops typing: the agent starts within it after the
# burst's first message.
BURST_WINDOW_MAX_MS = 15000


class Channel(models.Model):
    class Type(models.TextChoices):
        API = "API", "API"
        WHATSAPP = "WHATSAPP", "WhatsApp"
        WEBCHAT = "WEBCHAT", "Web chat"

    class BurstMode(models.TextChoices):
        QUEUE = "queue", "Queue: every message is answered, in order"
        LATEST = "latest", "Latest: a newer message supersedes the earlier unanswered ones"

    id = models.CharField(primary_key=True, max_length=40, default=ids.channel_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="channels")
    name = models.CharField(max_length=200)
    type = models.CharField(max_length=20, choices=Type.choices, default=Type.API)
    is_active = models.BooleanField(default=True)
    agent = models.ForeignKey(AIAgent, on_delete=models.PROTECT, null=True, blank=True, related_name="channels")
    team = models.ForeignKey(
        Team,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="channels",
        help_text="The team of the workspace the channel belongs to, if any.",
    )
    # A day: a contact who comes back the next day starts afresh, while a conversation paused for lunch
    # goes on (README "Conversations").
    inactivity_timeout_seconds = models.PositiveIntegerField(
        default=86400,
        help_text="An active conversation whose last message is older than this is closed (reason "
        "inactivity); the contact's next message opens a new one. 0: never.",
    )
    # README "Bursts of short messages"; docs/architecture.md, "Bursts".
    burst_mode = models.CharField(
        max_length=10,
        choices=BurstMode.choices,
        default=BurstMode.QUEUE,
        help_text="queue: every message is answered, in order. latest: a newer message of the conversation "
        "supersedes the earlier unanswered ones, and one answer is given for all of them.",
    )
    burst_window_ms = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(BURST_WINDOW_MAX_MS)],
        help_text="latest mode: milliseconds the agent waits after a message for a newer one before it starts "
        f"(0-{BURST_WINDOW_MAX_MS}); each newer message restarts the wait, at most {BURST_WINDOW_MAX_MS} ms "
        "after the burst's first message.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(burst_window_ms__lte=BURST_WINDOW_MAX_MS), name="channel_burst_window_max"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.type})"

    def clean(self) -> None:
        """A channel's agent and team belong to its own workspace: another workspace's agent would answer
        with that workspace's instructions, and another's team would name it in every response."""
        super().clean()
        if not self.workspace_id:
            return
        errors = {}
        if self.agent is not None and self.agent.workspace_id != self.workspace_id:
            errors["agent"] = f"Choose an AI agent of the workspace \u201c{self.workspace}\u201d."
        if self.team is not None and self.team.workspace_id != self.workspace_id:
            errors["team"] = f"Choose a team of the workspace \u201c{self.workspace}\u201d."
        if errors:
            raise ValidationError(errors)
