"""Logs: structlog JSON lines, one request id per request, and no secrets.

- `RequestIdMiddleware` settles the request id (the caller's `X-Request-ID` when it looks like an id, else a
  new UUID), hands it to django-structlog (which binds it to every line of the request) and returns it in
  the response's `X-Request-ID`.
- django-structlog's "request_finished" line gets `latency_seconds`; the view binds `workspace_id`,
  `channel_id` and `api_key_prefix`, the messages service `agent_seconds`, the error handler `error_code`.
- `redact` runs last on every line, ours and the standard library's: it drops the values of keys that
  name secrets or message content and masks anything shaped like an API key or a bearer token.
- `format_exc_info` renders a logged exception as its traceback (files, lines, functions, code) and, for
  each exception of the chain, its class and, for a database error, its SQLSTATE and the constraint, table
  and column it names, never its text: exception messages quote data (PostgreSQL's "Failing row contains
  (...)" holds a whole message, its body included), and no pattern can tell which text is content.

Imported by the settings module, so it must not touch `django.conf.settings` at import time.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import traceback
import uuid
from collections.abc import MutableMapping
from typing import Any

import structlog
from django.dispatch import receiver
from django_structlog import signals

# What a request id from a load balancer or a caller looks like: a UUID, a ULID, a trace id. Anything
# else (spaces, quotes, newlines, 200 characters) could forge log lines or bloat them; it is replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

# Keys whose values never reach a log line, at any level: credentials and message content.
_SECRET_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "x_api_key",
        "authorization",
        "password",
        "secret",
        "token",
        "provider_key",
        "llm_api_key",
        "body",
        "content",
        "text",
        "caption",
        "contact_name",
    }
)
_SECRET_VALUES = (
    re.compile(r"\b[A-Za-z0-9]{8}\.[A-Za-z0-9]{32}\b"),  # a workspace API key (prefix.secret)
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),  # an OpenAI-style provider key
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"),  # an Authorization header's token
)
REDACTED = "[redacted]"


def _scrub(value: str) -> str:
    for pattern in _SECRET_VALUES:
        value = pattern.sub(REDACTED, value)
    return value


def redact(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: the last line of defence, not the way to keep secrets out of log calls."""
    for key, value in event_dict.items():
        if key.lower().replace("-", "_") in _SECRET_KEYS:
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = _scrub(value)
    return event_dict


# What a database error may say in a log line: identifiers and codes, never values. psycopg puts them on the
# error's `diag` (PostgreSQL's error fields); Django's wrapped error has the driver's error as its cause.
_DIAG_NAMES = ("constraint_name", "table_name", "column_name", "schema_name")


def _describe(exc: BaseException) -> str:
    """`module.Class [sqlstate=23502 table=...]`: what an exception is, without what it says."""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    fields = []
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        fields.append(f"sqlstate={sqlstate}")
    diag = getattr(exc, "diag", None)
    for field in _DIAG_NAMES if diag is not None else ():
        value = getattr(diag, field, None)
        if isinstance(value, str) and value:
            fields.append(f"{field.removesuffix('_name')}={value}")
    return f"{name} [{' '.join(fields)}]" if fields else name


def _chain(exc: BaseException) -> list[tuple[BaseException, str]]:
    """The exception and those it came from, innermost first, each with the sentence Python prints after it."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    link = ""
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, "The above exception was the direct cause of the following exception:"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "During handling of the above exception, another exception occurred:"
        else:
            current = None
    return chain[::-1]


def exception_summary(exc: BaseException) -> str:
    """One line for a log: the classes of the chain (outermost first) with their SQLSTATEs, no text."""
    return " <- ".join(_describe(item) for item, _ in reversed(_chain(exc)))


def exception_text(exc: BaseException) -> str:
    """The traceback Python would print, every exception's message replaced by its class and SQLSTATE."""
    parts: list[str] = []
    chain = _chain(exc)
    for index, (item, _) in enumerate(chain):
        if index:
            parts.append(f"\n{chain[index - 1][1]}\n\n")
        if item.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.format_list(traceback.extract_tb(item.__traceback__)))
        parts.append(f"{_describe(item)}: [message not logged]\n")
    return "".join(parts).rstrip("\n")


def format_exc_info(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor in place of structlog's own `format_exc_info`: `exc_info` (True, an exception
    or a `sys.exc_info()` tuple) becomes the `exception` field, rendered by `exception_text`."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc = exc_info
    elif isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc = exc_info[1]
    else:
        exc = None
    if exc is not None:
        event_dict["exception"] = exception_text(exc)
    return event_dict


def _pre_chain() -> list:
    """Processors for lines from the standard library's loggers (Django, gunicorn, requests, ours)."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def formatter(renderer: str = "json") -> structlog.stdlib.ProcessorFormatter:
    final = (
        structlog.dev.ConsoleRenderer()
        if renderer == "console"
        else structlog.processors.JSONRenderer(ensure_ascii=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            format_exc_info,  # ours: never an exception's text
            redact,
            final,
        ],
        foreign_pre_chain=_pre_chain(),
    )


def logging_config(*, level: str, renderer: str) -> dict[str, Any]:
    """Django's LOGGING: one handler on stderr, one line per record, JSON unless asked for the console."""
    at_least_info = level if logging.getLevelName(level) >= logging.INFO else "INFO"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": formatter, "renderer": renderer}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # Django logs every 4xx/5xx response again after the middlewares have run, so without the
            # request id; django-structlog's request_finished / request_failed say the same, with it.
            "django.request": {"level": "CRITICAL"},
            "django.server": {"level": "WARNING"},
            # At DEBUG the OpenAI SDK logs each request's options, the conversation included: never below INFO.
            # The SDK's HTTP stack is httpx2 / httpcore2 (the forks it depends on), which log under those names.
            "openai": {"level": at_least_info},
            "httpcore2": {"level": at_least_info},
            # One INFO line per agent call ("HTTP Request: POST ...") repeats our "agent replied" line.
            "httpx2": {"level": "WARNING"},
        },
    }


def structlog_configure() -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class RequestIdMiddleware:
    """Settles the request id before django-structlog reads it, and returns it as `X-Request-ID`."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else str(uuid.uuid4())
        request.META["HTTP_X_REQUEST_ID"] = request_id
        request.request_id = request_id
        request.started_at = time.perf_counter()
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


def _latency(request) -> float | None:
    started = getattr(request, "started_at", None)
    return None if started is None else round(time.perf_counter() - started, 4)


@receiver(signals.bind_extra_request_finished_metadata)
def _on_request_finished(request, log_kwargs, **kwargs) -> None:
    log_kwargs["latency_seconds"] = _latency(request)


@receiver(signals.bind_extra_request_failed_metadata)
def _on_request_failed(request, log_kwargs, **kwargs) -> None:
    log_kwargs["latency_seconds"] = _latency(request)


def log_bind(**values: Any) -> None:
    """Add fields to every later line of the current request (django-structlog clears them at its end)."""
    structlog.contextvars.bind_contextvars(**values)
