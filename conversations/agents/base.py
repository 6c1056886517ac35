"""The agent backend protocol: what the conversation runtime gives an agent and what it gets back.

A backend runs in the request's "think" phase: it must not touch the database (the runtime has released
its connection) and must raise `AgentTimeout` / `AgentUnavailable` (config.errors) for provider failures.
"""

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

# The names an agent may give for the environment variable that holds its provider key. The key is sent as
# a bearer token to the agent's base_url, which an operator chooses: any name would let the agent send
# SECRET_KEY or DATABASE_URL there. LLM_API_KEY (the platform's own) matches too.
API_KEY_ENV_VAR_PATTERN = r"^[A-Z][A-Z0-9_]*_API_KEY\Z"  # \Z, not $: "$" also matches before a final newline
_API_KEY_ENV_VAR = re.compile(API_KEY_ENV_VAR_PATTERN)


def api_key_env_var_allowed(name: str) -> bool:
    return bool(_API_KEY_ENV_VAR.fullmatch(name))


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
    greeting_text: str
    fallback_text: str
    split_threshold_chars: int
    history_max_messages: int
    history_max_chars: int
    credit_cost_per_reply: int
    credit_cost_per_1k_tokens: int
    knowledge: tuple[tuple[str, str], ...] = ()  # (question, answer) pairs, for the built-in agent


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


@dataclass
class AgentReply:
    texts: list[str]  # one entry per aiMessage, earliest first; never empty, no entry empty
    input_tokens: int = 0
    output_tokens: int = 0
    raw_model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class AgentBackend(Protocol):
    def reply(self, *, agent: AgentConfig, history: list[HistoryItem]) -> AgentReply:
        """Answer the last item of `history` (the contact's new message). `history` is oldest first."""
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


def get_backend(provider: str) -> AgentBackend:
    if provider == "openai":
        from conversations.agents.openai_agent import OpenAICompatibleAgent

        return OpenAICompatibleAgent()
    from conversations.agents.builtin import BuiltinAgent

    return BuiltinAgent()
