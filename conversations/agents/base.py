"""The agent backend protocol: what the conversation runtime gives an agent and what it gets back, and the
registry that finds an agent's backend by its provider.

A backend runs in the request's "think" phase: it must not touch the database (the runtime has released
its connection) and must raise `AgentTimeout` / `AgentUnavailable` (conversations/agents/errors.py) for provider
failures.

`settings.AGENT_BACKENDS` (Django's EMAIL_BACKEND pattern) is the one list of providers: it maps each
provider name an agent may have to the dotted path of its backend class. The AIAgent model's choices
(channels_app/models.py), the backend a request calls and the system checks (conversations/agents/checks.py)
all read it.
"""

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol, runtime_checkable

from django.conf import settings
from django.utils.module_loading import import_string

from channels_app.validators import API_KEY_ENV_VAR_PATTERN
from conversations.agents.errors import AgentUnavailable

_API_KEY_ENV_VAR = re.compile(API_KEY_ENV_VAR_PATTERN)


def api_key_env_var_allowed(name: str) -> bool:
    return bool(_API_KEY_ENV_VAR.fullmatch(name))


# At most this many rounds of tool calls per message; then one call without tools (README "Actions").
MAX_TOOL_ROUNDS = 5


@dataclass(frozen=True)
class ToolSpec:
    """An HTTP tool of the agent (channels_app.models.AgentTool), as the think phase needs it."""

    name: str
    description: str
    method: str
    url: str
    parameters: dict[str, Any]
    header_name: str
    header_env_var: str
    secret_encrypted: bytes
    timeout_seconds: float


@dataclass(frozen=True)
class KnowledgePassage:
    """A passage of one of the agent's documents, found for the message in the think phase (knowledge app)."""

    document_id: str  # the integrator's documentId
    title: str
    url: str | None
    heading: str  # the headings above it, outermost first, joined by " > "; "" when none
    text: str


@dataclass(frozen=True)
class AgentConfig:
    """A snapshot of an AIAgent row, taken in the accept phase so the think phase needs no query."""

    id: str
    name: str
    instructions: str
    provider: str
    model: str
    base_url: str
    api_key_env_var: str
    temperature: float | None
    max_output_tokens: int | None
    timeout_seconds: float
    transcribe_audio: bool
    transcription_model: str  # "" = settings.LLM_TRANSCRIPTION_MODEL
    greeting_text: str
    fallback_text: str
    split_threshold_chars: int
    history_max_messages: int
    history_max_chars: int
    credit_cost_per_reply: int
    credit_cost_per_1k_tokens: int
    embedding_model: str = ""
    knowledge_max_passages: int = 4
    knowledge_max_chars: int = 6000
    knowledge_language: str = "english"
    knowledge_passages: int = 0  # 0: the agent has no passages, and the think phase looks for none
    # The passages found for this message, best first: set in the think phase (api/flow/messaging.py), () before.
    knowledge: tuple[KnowledgePassage, ...] = ()
    actions: tuple[str, ...] = ()  # the built-in actions enabled (channels_app.validators.BUILTIN_ACTIONS)
    tools: tuple[ToolSpec, ...] = ()  # its HTTP tools
    # (id, name) of the workspace's other agents, when transfer_to_agent is enabled
    transfer_targets: tuple[tuple[str, str], ...] = ()

    @property
    def acts(self) -> bool:
        """Whether the agent may call tools: built-in actions or HTTP tools."""
        return bool(self.actions or self.tools)


@dataclass(frozen=True)
class MediaPart:
    """Media that arrived with a message, after download and checks (filled by the media pipeline)."""

    url: str
    mime_type: str = ""
    size: int = 0
    filename: str = ""
    caption: str = ""
    data: bytes | None = None  # the file's bytes, when the backend may need them (images, audio)
    text: str = ""  # text extracted from a document, bounded
    # An earlier message's cached file in Django storage (history_build), which the media pipeline may load
    # into `data`; "" when the file is gone or was never stored.
    stored_name: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class HistoryItem:
    """One message of the conversation as the agent sees it. `role` is "user" or "assistant"."""

    role: str
    type: str  # TEXT, IMAGE, AUDIO, VIDEO, DOCUMENT
    content: dict[str, Any]  # shaped like the API's content object, e.g. {"text": {"body": "hi"}}
    media: MediaPart | None = None
    # The integrator's `metadata` of the contact's new message (the last item only): context, not the
    # contact's words. Earlier messages' metadata is not sent: it described their moment, not this one.
    metadata: dict[str, str] = field(default_factory=dict)
    # The contact who wrote (the last item only): its name and attributes, from every conversation.
    contact: "ContactContext | None" = None


@dataclass(frozen=True)
class ContactContext:
    name: str
    attributes: dict[str, str]


class ActionRunner(Protocol):
    """What the runtime hands a backend that calls tools (`uses_tools = True`) for an agent with actions
    (api/flow/actions.py): the tools to offer, and their execution. Every failure is a result for the model."""

    def tools(self) -> list[dict[str, Any]]:
        """The OpenAI function tools (strict JSON Schemas)."""
        ...

    def call(self, *, name: str, arguments: str, deadline: float) -> str:
        """Run one call (`arguments` as the model sent them, JSON text) before the monotonic `deadline`;
        returns the result's text for the model, an error result included."""
        ...


@dataclass
class AgentReply:
    texts: list[str]  # one entry per aiMessage, earliest first; never empty, no entry empty
    input_tokens: int = 0
    output_tokens: int = 0
    raw_model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class AgentBackend(Protocol):
    """What settings.AGENT_BACKENDS names. One instance per class serves every request of a process, from
        several threads or greenlets at once: a backend keeps no per-request state.

        Optional, read with getattr so that a backend needs none of them: `label` (the provider's name in the
        admin), `sees_images = True` (earlier images of the history are loaded from the
    media cache for it), and a `transcribe` method (`AudioTranscriber`: voice messages are transcribed
        for an agent with `transcribe_audio` on).
    """

    def reply(self, *, agent: AgentConfig, history: list[HistoryItem]) -> AgentReply:
        """Answer the last item of `history` (the contact's new message). `history` is oldest first. A
        backend with `uses_tools = True` also takes `actions: ActionRunner | None` (given for an agent
        with actions or tools)."""
        ...


@runtime_checkable
class StreamingBackend(Protocol):
    """An `AgentBackend` that can hand out its answer as the model writes it (README "Streaming"). Optional:
    `reply_streamed` gives every other backend a default, its whole reply at once."""

    def reply_stream(self, *, agent: AgentConfig, history: list[HistoryItem]) -> Iterator[str | AgentReply]:
        """As `reply`, but yield each piece of text as it arrives, then, last, the finished `AgentReply` (the
        pieces joined and split into messages). Same error contract as `reply`, also once pieces went out."""
        ...


def reply_streamed(
    backend: AgentBackend,
    *,
    agent: AgentConfig,
    history: list[HistoryItem],
    on_delta: Callable[[str], None],
    tools: dict[str, Any] | None = None,
) -> AgentReply:
    """The backend's reply, each piece of its text passed to `on_delta` as it arrives: the backend's own
    `reply_stream`, or by default (a backend that cannot stream, such as the built-in agent) each of its
    messages whole, once the reply is complete."""
    tools = tools or {}  # `actions=` for a backend that uses tools (`backend_kwargs`)
    if not isinstance(backend, StreamingBackend):
        reply = backend.reply(agent=agent, history=history, **tools)
        for text in reply.texts:
            on_delta(text)
        return reply
    finished: AgentReply | None = None
    for item in backend.reply_stream(agent=agent, history=history, **tools):
        if isinstance(item, AgentReply):
            finished = item
        else:
            on_delta(item)
    if finished is None:
        raise AssertionError(f"{type(backend).__name__}.reply_stream ended without its AgentReply")
    return finished


@runtime_checkable
class AudioTranscriber(Protocol):
    def transcribe(self, *, agent: AgentConfig, data: bytes, filename: str, mime_type: str) -> str:
        """The text of a voice message ("" for silence); same error contract as `reply`."""
        ...


def split_reply(text: str, *, threshold: int) -> list[str]:
    """Split a long answer into several messages at paragraph boundaries.

    Paragraphs (separated by blank lines) are packed greedily into chunks of at most `threshold`
    characters; a single paragraph longer than the threshold stays whole rather than being cut mid-sentence.
    """
    text = text.strip()
    if not text:
        return []
    if threshold <= 0 or len(text) <= threshold:
        return [text]
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    chunks: list[str] = []
    current = ""
    for paragraph in paragraphs:
        candidate = f"{current}\n\n{paragraph}" if current else paragraph
        if current and len(candidate) > threshold:
            chunks.append(current)
            current = paragraph
        else:
            current = candidate
    if current:
        chunks.append(current)
    return chunks


@cache
def backend_class(path: str) -> type:
    """The class at a dotted path of settings.AGENT_BACKENDS, imported once per process."""
    return import_string(path)


@cache
def _backend_at(path: str) -> AgentBackend:
    return backend_class(path)()


def get_backend(provider: str) -> AgentBackend:
    """The backend for an agent's provider, as settings.AGENT_BACKENDS names it (created once per path).

    A provider the setting does not name is an error, never a silent fallback to another agent: the agent
    row was written around the model's choices, or a deployment dropped the provider from the setting.
    """
    path = settings.AGENT_BACKENDS.get(provider)
    if path is None:
        raise AgentUnavailable(
            f"The AI agent's provider {provider!r} is not configured on this platform. Ask an operator to set "
            "the agent's provider to a configured one, then retry with the same idempotency key.",
            details={"reason": "unknown_provider", "provider": provider},
        )
    return _backend_at(path)


def provider_has(provider: str, capability: str) -> bool:
    """Whether the provider's backend declares `capability` (an optional attribute of `AgentBackend`);
    False for an unknown provider: its request fails at the agent call."""
    path = settings.AGENT_BACKENDS.get(provider)
    return path is not None and bool(getattr(backend_class(path), capability, False))
