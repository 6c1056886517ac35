"""The OpenAI-compatible agent: chat completions against any endpoint that speaks the OpenAI API.

OpenAI, Azure, Ollama, vLLM, llama.cpp and LM Studio all answer `POST {base_url}/chat/completions`, so one
backend serves them all; the agent row picks the endpoint, the model and the name of the environment
variable that holds the key (the key itself is never stored).

Runs in the request's "think" phase: no database access. Every provider failure leaves as `AgentTimeout`
or `AgentUnavailable`, whose message and details never carry the provider key or the provider's body.
"""

import base64
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import openai
from django.conf import settings
from openai.types.chat import ChatCompletionContentPartParam, ChatCompletionMessageParam

from config.errors import AgentTimeout, AgentUnavailable
from conversations.agents.base import AgentConfig, AgentReply, HistoryItem, api_key_env_var_allowed, split_reply

logger = logging.getLogger(__name__)

# Two retries ride out a dropped keep-alive connection or a short 429/5xx burst. All attempts, and the pauses
# between them, share the agent's `timeout_seconds` (see `_within_deadline`). A module constant so tests can
# lower it instead of waiting for the backoff.
MAX_RETRIES = 2
# The pause before retry n (0-based) without a Retry-After header: 0.5 s, 1 s (the SDK's own backoff).
_RETRY_PAUSE_FIRST, _RETRY_PAUSE_MAX = 0.5, 8.0
# A retry is worth it only with this share of the agent's timeout still left; a last attempt with a sliver
# of time would turn the provider's 5xx or 429 into a timeout.
_RETRY_MIN_TIME_SHARE = 0.25
# Local servers (Ollama, llama.cpp) need no key, but the SDK refuses to build a client without one.
NO_KEY_PLACEHOLDER = "not-needed"
# OpenAI's transcription model; compatible servers (faster-whisper-server, LocalAI, Groq) accept or alias
# the name. There is no agent field for it yet: the chat model cannot transcribe, so `agent.model` won't do.
TRANSCRIPTION_MODEL = "whisper-1"
# Distinct (endpoint, key, timeout) combinations are few, one per configured provider; the bound only
# keeps key rotations from growing the cache for the life of the process.
_CLIENT_CACHE_MAX = 32

_ClientKey = tuple[str | None, str, float]
_T = TypeVar("_T")
_clients: dict[_ClientKey, openai.OpenAI] = {}
_clients_lock = threading.Lock()

_MEDIA_LABELS = {"IMAGE": "Image", "AUDIO": "Audio", "VIDEO": "Video", "DOCUMENT": "Document"}


class OpenAICompatibleAgent:
    """The `AgentBackend` for `provider == "openai"`."""

    def reply(self, *, agent: AgentConfig, history: list[HistoryItem]) -> AgentReply:
        """Send the instructions and the history window as one chat completion; split the answer.

        Temperature and max_tokens go out only when the agent sets them, so each server keeps its own
        defaults. `max_tokens` rather than `max_completion_tokens`: every compatible server knows it.
        """
        client = _client_for(agent)
        messages = _messages(agent, history)
        with _provider_errors(agent):
            response = _within_deadline(
                agent,
                lambda timeout: client.chat.completions.create(
                    model=agent.model or settings.LLM_MODEL,
                    messages=messages,
                    temperature=agent.temperature if agent.temperature is not None else openai.omit,
                    max_tokens=agent.max_output_tokens if agent.max_output_tokens is not None else openai.omit,
                    timeout=timeout,
                ),
            )
            text = (response.choices[0].message.content or "").strip()
            usage = response.usage
            input_tokens = int(usage.prompt_tokens or 0) if usage is not None else 0
            output_tokens = int(usage.completion_tokens or 0) if usage is not None else 0
            raw_model = str(response.model or "")
        if not text:
            logger.warning("LLM call failed for agent %s: %s", agent.id, "EmptyAnswer")
            raise AgentUnavailable("The AI agent returned an empty answer.", details={"reason": "empty_answer"})
        return AgentReply(
            texts=split_reply(text, threshold=agent.split_threshold_chars),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            raw_model=raw_model,
        )


def transcribe_audio(*, agent: AgentConfig, data: bytes, filename: str, mime_type: str) -> str:
    """Transcribe a voice message with the provider's `/audio/transcriptions` endpoint.

    Uses the agent's cached client (same endpoint, key and timeout) and the same error mapping as `reply`.
    Returns the stripped text, "" for silence.
    """
    client = _client_for(agent)
    with _provider_errors(agent):
        result = _within_deadline(
            agent,
            lambda timeout: client.audio.transcriptions.create(
                file=(filename or "audio", data, mime_type or "application/octet-stream"),
                model=TRANSCRIPTION_MODEL,
                timeout=timeout,
            ),
        )
        return str(result.text or "").strip()


def _within_deadline(agent: AgentConfig, send: Callable[[float], _T]) -> _T:
    """Call `send(timeout)`, retrying a dropped connection, a 429 or a 5xx up to MAX_RETRIES times, all within
    the agent's `timeout_seconds`.

    Our loop rather than the SDK's: the SDK gives every attempt the full timeout, retries a timed-out
    attempt, and sleeps as long as a Retry-After asks (up to two minutes), so a 60 s agent could hold the
    integrator's request for minutes, past the processing lease that keeps the conversation's order and the
    idempotency key. Here a timeout ends the call, and a retry happens only when its pause and a fair share
    of the timeout still fit.
    """
    deadline = time.monotonic() + agent.timeout_seconds
    for attempt in range(MAX_RETRIES + 1):
        try:
            return send(max(deadline - time.monotonic(), 0.001))
        except openai.APITimeoutError:
            raise  # the time is spent; another attempt could only time out too
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            pause = _retry_pause(exc, attempt)
            if attempt == MAX_RETRIES or pause is None:
                raise
            if deadline - time.monotonic() - pause < _RETRY_MIN_TIME_SHARE * agent.timeout_seconds:
                raise
            logger.info("LLM call for agent %s failed (%s); retrying in %.2f s", agent.id, type(exc).__name__, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")


def _retry_pause(exc: openai.APIError, attempt: int) -> float | None:
    """Seconds to wait before retrying `exc`, or None when a retry would not help. Retries what the SDK
    retries: a failed connection, 408, 409, 429 and 5xx, unless the provider says `x-should-retry: false`."""
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        should_retry = headers.get("x-should-retry")
        if should_retry == "false" or (
            should_retry != "true" and exc.status_code not in (408, 409, 429) and exc.status_code < 500
        ):
            return None
        for name, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
            try:
                asked = float(headers.get(name, "")) / divisor
            except ValueError:
                continue
            if 0 <= asked < float("inf"):
                return asked
    return min(_RETRY_PAUSE_FIRST * 2**attempt, _RETRY_PAUSE_MAX) * (1 - 0.25 * random.random())


def _api_key(agent: AgentConfig) -> str:
    """The provider key, read from the environment variable the agent names.

    The platform's `LLM_API_KEY` is the fallback only for an agent that talks to the platform's own
    `LLM_BASE_URL`: an agent pointed at another endpoint without a key variable of its own must not be
    handed the platform's key.
    """
    if agent.api_key_env_var:
        if not api_key_env_var_allowed(agent.api_key_env_var):
            # The model validates the name; this catches rows written around the validation (shell, SQL).
            logger.warning("agent %s names a key variable that is not allowed; not calling the provider", agent.id)
            raise AgentUnavailable(
                "The AI agent is misconfigured: its key variable must be named like OPENAI_API_KEY. "
                "Ask an operator to fix the agent's settings, then retry.",
                details={"reason": "api_key_env_var_not_allowed"},
            )
        key = os.environ.get(agent.api_key_env_var, "")
    elif not agent.base_url or agent.base_url.rstrip("/") == settings.LLM_BASE_URL.rstrip("/"):
        key = settings.LLM_API_KEY
    else:
        key = ""
    return key or NO_KEY_PLACEHOLDER


def _client_for(agent: AgentConfig) -> openai.OpenAI:
    """The shared client for the agent's endpoint, key and timeout.

    One client per combination keeps its connection pool (and TLS sessions) across requests; a client per
    call would pay a TCP and TLS handshake on every message. The SDK's client is thread-safe.
    The client does not retry: `_within_deadline` does, and gives each attempt what is left of the agent's
    `timeout_seconds` (the SDK's default, 10 minutes, would hold the integrator's synchronous request, and a
    worker, long after anyone still waits for the answer).
    """
    base_url = agent.base_url or settings.LLM_BASE_URL or None  # None: the SDK's default, api.openai.com
    key = _api_key(agent)
    cache_key: _ClientKey = (base_url, key, agent.timeout_seconds)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            if len(_clients) >= _CLIENT_CACHE_MAX:
                # The oldest entry goes; a request still using it keeps its reference and finishes normally.
                del _clients[next(iter(_clients))]
            client = openai.OpenAI(base_url=base_url, api_key=key, timeout=agent.timeout_seconds, max_retries=0)
            _clients[cache_key] = client
    return client


@contextmanager
def _provider_errors(agent: AgentConfig) -> Iterator[None]:
    """Turn the SDK's failures, and answers of the wrong shape, into the contract's agent errors.

    The SDK's exceptions carry the provider's body and the request (with its Authorization header), so the
    new error is raised `from None` and the log line names only the agent and the exception class.
    """
    try:
        yield
    except openai.APITimeoutError as exc:
        _log_failure(agent, exc)
        raise AgentTimeout(details={"timeoutSeconds": agent.timeout_seconds}) from None
    except openai.APIConnectionError as exc:
        _log_failure(agent, exc)
        raise AgentUnavailable(details={"reason": _connection_reason(exc)}) from None
    except openai.APIStatusError as exc:
        _log_failure(agent, exc)
        raise AgentUnavailable(details={"providerStatus": exc.status_code}) from None
    # Invalid JSON (ValueError, which pydantic's ValidationError also is), no choices, wrong types.
    except (openai.APIError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        _log_failure(agent, exc)
        raise AgentUnavailable(details={"reason": "invalid_response"}) from None


def _log_failure(agent: AgentConfig, exc: BaseException) -> None:
    logger.warning("LLM call failed for agent %s: %s", agent.id, type(exc).__name__)


def _connection_reason(exc: BaseException) -> str:
    """`connection_refused` when nothing listens (the usual local-server mistake), else a general word."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection_refused"
        seen = seen.__cause__ or seen.__context__
    return "connection_failed"


def _messages(agent: AgentConfig, history: list[HistoryItem]) -> list[ChatCompletionMessageParam]:
    """The system prompt, then the history with user and assistant alternating.

    A reply split into several aiMessages goes back as the one answer the model wrote (the parts joined at
    the paragraph breaks they were split at): chat templates of some servers (vLLM, llama.cpp with Mistral
    or Llama templates) refuse two assistant messages in a row.
    """
    messages: list[ChatCompletionMessageParam] = []
    if agent.instructions.strip():
        messages.append({"role": "system", "content": agent.instructions})
    if history and history[-1].metadata:
        messages.append({"role": "system", "content": _metadata_context(history[-1].metadata)})
    for item in history:
        if item.role == "assistant":
            text = _as_text(item)
            previous = messages[-1] if messages else None
            if previous is not None and previous["role"] == "assistant":
                previous["content"] = f"{previous['content']}\n\n{text}"
            else:
                messages.append({"role": "assistant", "content": text})
        else:
            messages.append({"role": "user", "content": _user_content(item)})
    return messages


def _metadata_context(metadata: dict[str, str]) -> str:
    """The integrator's `metadata` of the new message, as a system message after the instructions: it is
    context from the integrator's systems (a plan, an order id, a page), and the model must not take it for
    the contact's words. JSON keeps the keys and values apart whatever they contain."""
    return (
        "Metadata the integrator sent with the contact's latest message (context from its systems, not "
        "written by the contact), as JSON: " + json.dumps(metadata, ensure_ascii=False, sort_keys=True)
    )


def _user_content(item: HistoryItem) -> str | list[ChatCompletionContentPartParam]:
    """Images go as image parts (the bytes inline when the media pipeline kept them, so the provider needs
    no access to the contact's URL); other media as a text description the model can read."""
    if item.type != "IMAGE":
        return _as_text(item)
    media = item.media
    body = _body(item)
    if media is not None and media.data and media.mime_type:
        url = f"data:{media.mime_type};base64,{base64.b64encode(media.data).decode('ascii')}"
    else:
        url = (media.url if media is not None else "") or str(body.get("url") or "")
    if not url:
        return _describe(item)
    caption = (media.caption if media is not None else "") or str(body.get("caption") or "")
    return [
        {"type": "text", "text": caption or "(image)"},
        {"type": "image_url", "image_url": {"url": url}},
    ]


def _as_text(item: HistoryItem) -> str:
    if item.type == "TEXT":
        return str(_body(item).get("body") or "")
    return _describe(item)


def _describe(item: HistoryItem) -> str:
    """E.g. `[Document "report.pdf" (application/pdf, 12 KB): caption]`, then the document's text or
    the audio's transcription when the media pipeline extracted one."""
    media = item.media
    if item.type == "AUDIO" and media is not None and media.text:
        return f"[Audio transcription]: {media.text}"
    body = _body(item)
    label = _MEDIA_LABELS.get(item.type, item.type.capitalize() or "Attachment")
    filename = (media.filename if media is not None else "") or str(body.get("filename") or "")
    if filename:
        label += f' "{filename}"'
    facts = [fact for fact in (media.mime_type, _human_size(media.size)) if fact] if media is not None else []
    if facts:
        label += f" ({', '.join(facts)})"
    caption = (media.caption if media is not None else "") or str(body.get("caption") or "")
    text = f"[{label}: {caption}]" if caption else f"[{label}]"
    if item.type == "DOCUMENT" and media is not None and media.text:
        text += f"\nDocument text:\n{media.text}"
    return text


def _body(item: HistoryItem) -> dict[str, Any]:
    """The type's object inside `content`, e.g. {"url": ..., "caption": ...} for an IMAGE."""
    body = item.content.get(item.type.lower()) if isinstance(item.content, dict) else None
    return body if isinstance(body, dict) else {}


def _human_size(size: int) -> str:
    if size <= 0:
        return ""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{round(size / 1024)} KB"
    return f"{size / (1024 * 1024):.1f} MB"
