"""The OpenAI-compatible agent: chat completions against any endpoint that speaks the OpenAI API.

OpenAI, Azure, Ollama, vLLM, llama.cpp and LM Studio all answer `POST {base_url}/chat/completions`, so one
backend serves them all; the agent row picks the endpoint, the model and the name of the environment
variable that holds the key (the key itself is never stored).

Runs in the request's "think" phase: no database access. Every provider failure leaves as `AgentTimeout`
or `AgentUnavailable`, whose message and details never carry the provider key or the provider's body.
"""

import base64
import contextvars
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpcore2
import httpx2
import openai
from django.conf import settings
from openai import RequestOptions
from openai.types import CreateEmbeddingResponse
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionContentPartParam,
    ChatCompletionMessageParam,
)

from config.text import human_size as _human_size  # tests import it from here too
from conversations.agents.base import (
    MAX_TOOL_ROUNDS,
    ActionRunner,
    AgentConfig,
    AgentReply,
    ContactContext,
    HistoryItem,
    KnowledgePassage,
    api_key_env_var_allowed,
    split_reply,
)
from conversations.agents.errors import AgentTimeout, AgentUnavailable
from conversations.models import content_body, media_filename

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
# A request body goes out in slices of this size, the deadline checked before each: one socket write can
# otherwise go on as long as the provider keeps reading, a byte at a time (a 10 MB voice note).
_WRITE_SLICE_BYTES = 64 * 1024
# Distinct (endpoint, key, timeout) combinations are few, one per configured provider; the bound only
# keeps key rotations from growing the cache for the life of the process.
_CLIENT_CACHE_MAX = 32

_ClientKey = tuple[str | None, str, float]
_T = TypeVar("_T")
_clients: dict[_ClientKey, openai.OpenAI] = {}
_clients_lock = threading.Lock()
_COMPLETIONS_PATH = "/chat/completions"  # under the client's base_url, as the SDK's chat.completions.create

_MEDIA_LABELS = {"IMAGE": "Image", "AUDIO": "Audio", "VIDEO": "Video", "DOCUMENT": "Document"}
# What a media message's text is, after its description: a document's extracted text, an audio's transcription.
_TEXT_HEADINGS = {"DOCUMENT": "Document text", "AUDIO": "Transcription"}


class OpenAICompatibleAgent:
    """The backend settings.AGENT_BACKENDS names "openai": an `AgentBackend` and an `AudioTranscriber`."""

    label = "OpenAI-compatible"
    sees_images = True  # earlier images go to the model as their cached bytes (media.pipeline)
    uses_tools = True  # the agent's actions and HTTP tools, as function tools (README "Actions")

    def reply(
        self, *, agent: AgentConfig, history: list[HistoryItem], actions: ActionRunner | None = None
    ) -> AgentReply:
        """Send the instructions and the history window as one chat completion; split the answer.

        Temperature and max_tokens go out only when the agent sets them, so each server keeps its own
        defaults. `max_tokens` rather than `max_completion_tokens`: every compatible server knows it.
        With `actions`, the tool loop (`_rounds`): each round's tool calls run, their results go back.
        """
        client = _client_for(agent)
        turn = _Turn(agent, history, actions)
        for body in turn.rounds():
            with _provider_errors(agent):
                response = _within_deadline(
                    agent,
                    lambda timeout, body=body: client.post(  # type: ignore[misc]
                        _COMPLETIONS_PATH,
                        cast_to=ChatCompletion,
                        body=body,
                        options=_request_options(timeout),
                    ),
                    deadline=turn.deadline,
                )
                message = response.choices[0].message
                turn.pieces.append(_storable_text(message.content))
                usage = response.usage
                turn.count(
                    _token_count(usage.prompt_tokens if usage is not None else None),
                    _token_count(usage.completion_tokens if usage is not None else None),
                    str(response.model or ""),
                )
                calls = [
                    (call.id, function.name, function.arguments)
                    for call in (message.tool_calls or [])
                    if (function := getattr(call, "function", None)) is not None
                ]
            turn.calls = [(str(id), str(name), str(arguments)) for id, name, arguments in calls]
        return turn.finished()

    def embed(self, *, agent: AgentConfig, texts: list[str], timeout: float) -> list[list[float]]:
        """The agent's `embedding_model`'s vectors of `texts` (`POST {base_url}/embeddings`), in order, within
        `timeout` seconds; AgentTimeout / AgentUnavailable as `reply` (the knowledge app falls back to
        full-text search on either)."""
        client = _client_for(agent)
        body = {"model": agent.embedding_model, "input": texts}
        with _provider_errors(agent):
            response = client.post(
                "/embeddings", cast_to=CreateEmbeddingResponse, body=body, options=_request_options(timeout)
            )
            vectors = sorted(response.data, key=lambda item: item.index)
        if len(vectors) != len(texts):
            raise AgentUnavailable(
                "The provider's embeddings did not match the texts sent.", details={"reason": "bad_embeddings"}
            )
        return [list(item.embedding) for item in vectors]

    def reply_stream(
        self, *, agent: AgentConfig, history: list[HistoryItem], actions: ActionRunner | None = None
    ) -> Iterator[str | AgentReply]:
        """As `reply`, as a stream (`stream=True`; the usage comes in the last chunk, `include_usage`): yield
        each piece of text as it arrives, then the `AgentReply`. The agent's `timeout_seconds` bounds the
        whole call, the stream's reading included (`_DeadlineBackend`); a failure before the first piece is
        retried as in `reply`, one after it is not (the pieces went out). With `actions`, each round is
        streamed and its tool calls gathered from the chunks. A round's stream that ends before a choice's
        `finish_reason` is a failure (AgentUnavailable, `incomplete_stream`), whatever pieces came."""
        client = _client_for(agent)
        turn = _Turn(agent, history, actions)
        for body in turn.rounds():
            calls: dict[int, list[str]] = {}  # index: [id, name, arguments]
            input_tokens = output_tokens = 0
            raw_model = ""
            finished = False  # a choice's finish_reason came: the model ended its answer (or asked for tools)
            with _provider_errors(agent):
                stream = _within_deadline(
                    agent,
                    lambda timeout, body=body: client.post(  # type: ignore[misc]
                        _COMPLETIONS_PATH,
                        cast_to=ChatCompletion,
                        body={**body, "stream": True, "stream_options": {"include_usage": True}},
                        options=_request_options(timeout),
                        stream=True,
                        stream_cls=openai.Stream[ChatCompletionChunk],
                    ),
                    deadline=turn.deadline,
                )
                token = _call_deadline.set(turn.deadline)  # the reads of the stream's body keep to the same deadline
                try:
                    with stream:
                        for chunk in stream:
                            raw_model = str(chunk.model or raw_model)
                            if chunk.usage is not None:
                                input_tokens = _token_count(chunk.usage.prompt_tokens)
                                output_tokens = _token_count(chunk.usage.completion_tokens)
                            if chunk.choices:
                                delta = chunk.choices[0].delta
                                if chunk.choices[0].finish_reason is not None:
                                    finished = True
                                piece = _storable_text(delta.content)
                                if piece:
                                    turn.pieces.append(piece)
                                    yield piece
                                for part in delta.tool_calls or []:
                                    gathered = calls.setdefault(int(part.index), ["", "", ""])
                                    gathered[0] = part.id or gathered[0]
                                    if part.function is not None:
                                        gathered[1] += part.function.name or ""
                                        gathered[2] += part.function.arguments or ""
                except httpx2.TimeoutException:
                    raise openai.APITimeoutError(request=httpx2.Request("POST", "stream")) from None
                except httpx2.HTTPError as exc:
                    raise openai.APIConnectionError(request=httpx2.Request("POST", "stream")) from exc
                finally:
                    _call_deadline.reset(token)
            if not finished:
                # The stream ended (the connection closed, or the SDK met `[DONE]`) before the model said why it
                # stopped: the pieces are a fragment of an answer (or of its tool calls), not one to store,
                # charge, replay or run.
                logger.warning("LLM call failed for agent %s: %s", agent.id, "IncompleteStream")
                raise AgentUnavailable(
                    "The AI agent's answer was cut off before it finished. Send the message again.",
                    details={"reason": "incomplete_stream"},
                )
            turn.count(input_tokens, output_tokens, raw_model)
            turn.calls = [(id, name, arguments) for _, (id, name, arguments) in sorted(calls.items())]
        yield turn.finished()

    def transcribe(self, *, agent: AgentConfig, data: bytes, filename: str, mime_type: str) -> str:
        return transcribe_audio(agent=agent, data=data, filename=filename, mime_type=mime_type)


class _Turn:
    """One message's calls of the model: a single call, or with `actions` the tool loop. `rounds()` gives
    each call's body; after each, the caller sets `calls` (the model's tool calls, (id, name, arguments)),
    which run before the next body is made. At most MAX_TOOL_ROUNDS rounds offer the tools, then one call
    without them; all within one deadline, the agent's `timeout_seconds`; tokens summed over the calls."""

    def __init__(self, agent: AgentConfig, history: list[HistoryItem], actions: ActionRunner | None) -> None:
        self.agent, self.actions = agent, actions
        self.messages = _messages(agent, history)
        self.deadline = time.monotonic() + agent.timeout_seconds
        self.tools = actions.tools() if actions is not None else []
        self.pieces: list[str] = []
        self.calls: list[tuple[str, str, str]] = []
        self.input_tokens = self.output_tokens = 0
        self.raw_model = ""
        self.tool_rounds = 0

    def rounds(self) -> Iterator[dict[str, Any]]:
        for round_number in range(MAX_TOOL_ROUNDS + 1):
            body = _completion_body(self.agent, self.messages)
            offered = bool(self.tools) and round_number < MAX_TOOL_ROUNDS
            if offered:
                body["tools"] = self.tools
            self.calls = []
            yield body
            if not (offered and self.calls and self.actions is not None):
                return
            self.tool_rounds += 1
            self.messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}
                        for id, name, arguments in self.calls
                    ],
                }
            )
            for id, name, arguments in self.calls:
                result = self.actions.call(name=name, arguments=arguments, deadline=self.deadline)
                self.messages.append({"role": "tool", "tool_call_id": id, "content": result})

    def count(self, input_tokens: int, output_tokens: int, raw_model: str) -> None:
        self.input_tokens = min(self.input_tokens + input_tokens, TOKENS_MAX)
        self.output_tokens = min(self.output_tokens + output_tokens, TOKENS_MAX)
        self.raw_model = raw_model or self.raw_model

    def finished(self) -> AgentReply:
        text = "".join(self.pieces).strip()
        if not text and self.tool_rounds and self.agent.fallback_text.strip():
            # A model that still asks for tools when none are offered any more (a loop): its actions stand,
            # and the contact gets the agent's fallback text rather than a 502.
            text = self.agent.fallback_text.strip()
        if not text:
            logger.warning("LLM call failed for agent %s: %s", self.agent.id, "EmptyAnswer")
            raise AgentUnavailable("The AI agent returned an empty answer.", details={"reason": "empty_answer"})
        return AgentReply(
            texts=split_reply(text, threshold=self.agent.split_threshold_chars),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            raw_model=self.raw_model,
        )


def transcribe_audio(*, agent: AgentConfig, data: bytes, filename: str, mime_type: str) -> str:
    """Transcribe a voice message with the provider's `/audio/transcriptions` endpoint, with the agent's
    `transcription_model` (else settings.LLM_TRANSCRIPTION_MODEL; the chat model cannot transcribe).

    Uses the agent's cached client (same endpoint, key and timeout) and the same error mapping as `reply`.
    Returns the stripped text, "" for silence.
    """
    client = _client_for(agent)
    with _provider_errors(agent):
        result = _within_deadline(
            agent,
            lambda timeout: client.audio.transcriptions.create(
                file=(filename or "audio", data, mime_type or "application/octet-stream"),
                model=agent.transcription_model or settings.LLM_TRANSCRIPTION_MODEL,
                timeout=timeout,
            ),
        )
        return _storable_text(result.text).strip()


class _InvalidAnswer(ValueError):
    """The provider answered, but with something that cannot be stored or charged (502 invalid_response)."""


def _storable_text(value: object) -> str:
    """The provider's text, "" for none; refuses what PostgreSQL cannot store in a text or JSON column.

    U+0000 and a lone surrogate (JSON allows both, as the escapes "\\u0000" and "\\ud800") end the
    record phase with a database error. Refused rather than stripped: a model that writes them is broken
    (wrong decoding, a truncated multi-byte character) and the rest of its text is not to be trusted either.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _InvalidAnswer(f"the text is a {type(value).__name__}")
    if "\x00" in value:
        raise _InvalidAnswer("the text contains U+0000")
    try:
        value.encode("utf-8")  # fails on a surrogate that is not half of a pair
    except UnicodeEncodeError:
        raise _InvalidAnswer("the text contains a lone surrogate") from None
    return value


# The reply's and the ledger's token columns are 32-bit integers (PositiveIntegerField).
TOKENS_MAX = 2**31 - 1


def _token_count(value: object) -> int:
    """A usage count as an int in 0..TOKENS_MAX, 0 when the provider sent none. A whole float (42.0)
    counts as the integer it is; a fraction, a string, a boolean, a negative or a larger number is refused:
    charging from it, or storing it, would be wrong or fail."""
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= TOKENS_MAX:
        raise _InvalidAnswer("a token count is not an integer from 0 to 2^31 - 1")
    return value


def _within_deadline(agent: AgentConfig, send: Callable[[float], _T], *, deadline: float | None = None) -> _T:
    """Call `send(timeout)`, retrying a dropped connection, a 429 or a 5xx up to MAX_RETRIES times, all within
    the agent's `timeout_seconds`.

    Our loop rather than the SDK's: the SDK gives every attempt the full timeout, retries a timed-out
    attempt, and sleeps as long as a Retry-After asks (up to two minutes), so a 60 s agent could hold the
    integrator's request for minutes, past the processing lease that keeps the conversation's order and the
    idempotency key. Here a timeout ends the call, and a retry happens only when its pause and a fair share
    of the timeout still fit.

    The SDK's `timeout` bounds each socket operation, not their sum: a provider that sends its headers or
    its body a byte at a time never lets one read wait long enough to time out. So the deadline is also
    set for `_DeadlineBackend`, which gives every connect, read and write of this call only what is left
    of it, and times the call out once nothing is left (see `_deadline_install`). `deadline` (a monotonic
    instant) when the caller's call goes on after `send` returns: a stream, read to the same deadline.
    """
    if deadline is None:
        deadline = time.monotonic() + agent.timeout_seconds
    token = _call_deadline.set(deadline)
    try:
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
                logger.info(
                    "LLM call for agent %s failed (%s); retrying in %.2f s", agent.id, type(exc).__name__, pause
                )
                time.sleep(pause)
        raise AssertionError("unreachable")
    finally:
        _call_deadline.reset(token)


# --- the whole call's deadline, on every socket operation --------------------------------------------------

# The monotonic instant the current agent call must end by; None outside `_within_deadline`. A context
# variable: each thread, and each gevent greenlet (one per request in production), has its own.
_call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("agent_call_deadline", default=None)


def _time_left(timeout: float | None, expired: type[httpcore2.TimeoutException]) -> float | None:
    """`timeout`, cut to what is left of the current call's deadline; raises `expired` once none is left.

    The socket then waits at most until the deadline: a read blocked on a silent provider times out there,
    and a provider that drips keeps each read short but meets the check before the next one. httpx maps
    the httpcore timeouts to its own, which the SDK raises as APITimeoutError (504 agent_timeout).
    """
    deadline = _call_deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("The agent call's deadline has passed.")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    """A connection whose reads and writes stop at the current call's deadline (`_time_left`).

    A pooled connection serves one call at a time and reads the deadline of whichever call uses it now.
    """

    def __init__(self, stream: httpcore2.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        while view:
            self._stream.write(view[:_WRITE_SLICE_BYTES], _time_left(timeout, httpcore2.WriteTimeout))
            view = view[_WRITE_SLICE_BYTES:]

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.NetworkStream:
        left = _time_left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore2.NetworkBackend):
    """httpcore's network backend, its connections wrapped in `_DeadlineStream` and each connect bounded by
    what is left of the current call (name resolution is not: the standard library cannot bound it)."""

    def __init__(self, backend: httpcore2.NetworkBackend):
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        left = _time_left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, left, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.NetworkStream:
        left = _time_left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _deadline_install(http_client: httpx2.Client) -> httpx2.Client:
    """Put `_DeadlineBackend` under every transport of `http_client` (the direct one and any proxy's that
    httpx set up from the environment), before it opens a connection.

    httpx has no public way to hand its transport a network backend, so this sets the connection pool's
    `_network_backend`. A version of httpx or httpcore without it raises here, at the first call, rather
    than calling providers without a deadline; the deadline tests (tests/conversations/
    test_openai_agent_deadline.py) fail on it first. Only the synchronous stack is covered: this backend
    runs the SDK's synchronous client, under threads and under gevent alike (sockets and context
    variables are per greenlet there).
    """
    transports = [http_client._transport, *(t for t in http_client._mounts.values() if t is not None)]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if not isinstance(backend, httpcore2.NetworkBackend):
            raise RuntimeError(f"cannot bound the agent's calls: {type(transport).__name__} has no network backend")
        if not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
    return http_client


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
            client = openai.OpenAI(
                base_url=base_url,
                api_key=key,
                timeout=agent.timeout_seconds,
                max_retries=0,
                http_client=_deadline_install(openai.DefaultHttpxClient()),
            )
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
    # Invalid JSON (ValueError, which pydantic's ValidationError also is), no choices, wrong types, and
    # answers that cannot be stored (_InvalidAnswer, a ValueError too).
    except (openai.APIError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        _log_failure(agent, exc)
        raise AgentUnavailable(details={"reason": "invalid_response"}) from None


def _log_failure(agent: AgentConfig, exc: BaseException) -> None:
    # Only our own _InvalidAnswer's words are logged: the SDK's messages may quote the provider's body.
    detail = f" ({exc})" if isinstance(exc, _InvalidAnswer) else ""
    logger.warning("LLM call failed for agent %s: %s%s", agent.id, type(exc).__name__, detail)


def _connection_reason(exc: BaseException) -> str:
    """`connection_refused` when nothing listens (the usual local-server mistake), else a general word."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection_refused"
        seen = seen.__cause__ or seen.__context__
    return "connection_failed"


def _completion_body(agent: AgentConfig, messages: list[ChatCompletionMessageParam]) -> dict[str, Any]:
    """What a chat completion sends, streamed or not. Temperature and max_tokens only when the agent sets
    them, so each server keeps its own defaults.

    Sent with the client's own `post`, as `chat.completions.create` sends it (same path, auth, headers,
    errors, typed answer), but without `create`'s walk of the body against the SDK's parameter types
    (`maybe_transform`): that walk renames aliased keys and formats dates, which no key here has, and it
    cost about 1 ms of CPU per call, a third of the whole call (bench/RESULTS.md, "CPU per message").
    """
    body: dict[str, Any] = {"model": agent.model or settings.LLM_MODEL, "messages": messages}
    if agent.temperature is not None:
        body["temperature"] = agent.temperature
    if agent.max_output_tokens is not None:
        body["max_tokens"] = agent.max_output_tokens
    return body


def _request_options(timeout: float) -> RequestOptions:
    # `create`'s security: the bearer key only (the SDK's default would fall back to an admin key).
    return {"timeout": timeout, "security": {"bearer_auth": True}}


def _messages(agent: AgentConfig, history: list[HistoryItem]) -> list[ChatCompletionMessageParam]:
    """The system prompt, then the history with user and assistant alternating.

    A reply split into several aiMessages goes back as the one answer the model wrote (the parts joined at
    the paragraph breaks they were split at): chat templates of some servers (vLLM, llama.cpp with Mistral
    or Llama templates) refuse two assistant messages in a row.
    """
    messages: list[ChatCompletionMessageParam] = []
    if agent.instructions.strip():
        messages.append({"role": "system", "content": agent.instructions})
    if agent.knowledge:
        messages.append({"role": "system", "content": _knowledge_context(agent.knowledge)})
    if history and history[-1].metadata:
        messages.append({"role": "system", "content": _metadata_context(history[-1].metadata)})
    if history and history[-1].contact is not None:
        messages.append({"role": "system", "content": _contact_context(history[-1].contact)})
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


def _knowledge_context(passages: tuple[KnowledgePassage, ...]) -> str:
    """The passages of the agent's documents found for this message (README "The agent's knowledge"), best
    first, each under its document's title and headings: a system message after the instructions."""
    parts = [
        "Passages from the business's own documents that may answer the contact, best match first. Answer "
        "from them where they apply; do not invent what they do not say."
    ]
    for passage in passages:
        where = f"{passage.title} > {passage.heading}" if passage.heading else passage.title
        parts.append(f"[{where}]\n{passage.text}")
    return "\n\n".join(parts)


def _metadata_context(metadata: dict[str, str]) -> str:
    """The integrator's `metadata` of the new message, as a system message after the instructions: it is
    context from the integrator's systems (a plan, an order id, a page), and the model must not take it for
    the contact's words. JSON keeps the keys and values apart whatever they contain."""
    return (
        "Metadata the integrator sent with the contact's latest message (context from its systems, not "
        "written by the contact), as JSON: " + json.dumps(metadata, ensure_ascii=False, sort_keys=True)
    )


def _contact_context(contact: ContactContext) -> str:
    """The contact's name and attributes (README "Contact attributes and labels"), as JSON: what earlier
    conversations, the integrator or the agent's set_contact_attributes remembered about them."""
    return "The contact you are talking to, as JSON (name, and the attributes remembered about them): " + json.dumps(
        {"name": contact.name or None, "attributes": contact.attributes}, ensure_ascii=False, sort_keys=True
    )


def _user_content(item: HistoryItem) -> str | list[ChatCompletionContentPartParam]:
    """An image with its bytes (the media pipeline's: the new message's, and earlier ones within the
    history's image budget) goes as an image part with the bytes inline; any other image as its text
    description, and other media as a description too. Never by the contact's URL: it may be signed or
    private, and the provider has no business fetching it."""
    media = item.media
    if item.type != "IMAGE" or media is None or not media.data or not media.mime_type:
        return _as_text(item)
    url = f"data:{media.mime_type};base64,{base64.b64encode(media.data).decode('ascii')}"
    caption = media.caption or str(content_body(type=item.type, content=item.content).get("caption") or "")
    return [
        {"type": "text", "text": caption or "(image)"},
        {"type": "image_url", "image_url": {"url": url}},
    ]


def _as_text(item: HistoryItem) -> str:
    if item.type == "TEXT":
        return str(content_body(type=item.type, content=item.content).get("body") or "")
    return _describe(item)


def _named(item: HistoryItem) -> str:
    """The file name the agent is told: the request's `filename`, else the URL's last segment (documents,
    audio, video). Never an image's: it has no `filename`, and its URL, often signed, is never sent."""
    if item.type == "IMAGE":
        return ""
    return (item.media.filename if item.media is not None else "") or media_filename(
        type=item.type, content=item.content
    )


def _describe(item: HistoryItem) -> str:
    """E.g. `[Document "report.pdf" (application/pdf, 12 KB): caption]`, then the document's text or
    the audio's transcription when the media pipeline extracted one (on the message's own turn and, from
    the history, on later ones)."""
    media = item.media
    body = content_body(type=item.type, content=item.content)
    label = _MEDIA_LABELS.get(item.type, item.type.capitalize() or "Attachment")
    filename = _named(item)
    if filename:
        label += f' "{filename}"'
    facts = [fact for fact in (media.mime_type, _human_size(media.size)) if fact] if media is not None else []
    if facts:
        label += f" ({', '.join(facts)})"
    caption = (media.caption if media is not None else "") or str(body.get("caption") or "")
    text = f"[{label}: {caption}]" if caption else f"[{label}]"
    if media is not None and media.text:
        text += f"\n{_TEXT_HEADINGS.get(item.type, 'Text')}:\n{media.text}"
    return text
