"""Streaming (README "Streaming"): `Accept: text/event-stream` answers with Server-Sent Events, `delta` as
the agent writes, `action` as each of its actions completes (README "Actions"), `message` for each stored
reply, then `done` with the 200 body (the one stored for idempotent replay), or `error` with the error body.

The phases are the synchronous mode's (api.flow.messaging.message_answer), run in a thread of their own (a
greenlet under gevent) that feeds a queue; the response's generator only reads the queue and writes. So no
transaction or connection is held while the text flows, and a client that goes away mid-stream (the
generator is closed, or raises on its next write) leaves the thread to record the answer all the same: a
retry with the idempotency key replays it. Errors found before the agent starts (the media, the turn) are
raised in the request, as the usual JSON response with its status code.
"""

import contextvars
import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import structlog
from django.db import connections

from api.flow.messaging import Accepted, PostResult, message_answer, render
from api.serializers import ActionSerializer, represent
from config.errors import ApplicationError
from config.exception_handler import error_body, to_application_error

logger = structlog.get_logger(__name__)

CONTENT_TYPE = "text/event-stream"


def event(name: str, data: bytes) -> bytes:
    """One event. `data` is compact JSON: a JSON text holds no line break outside its strings, and json
    escapes those inside, so it fits the one `data:` line."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def replay_events(body: bytes) -> Iterator[bytes]:
    """A replayed answer, for a retry that asks for a stream: the stored 200 body as the one `done` event."""
    yield event("done", body)


def message_answer_streamed(accepted: Accepted) -> PostResult:
    """Run think and record for `accepted` in a thread; wait until the agent starts (media ready, the
    conversation's turn come), then return the events. An error before that is raised here."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def run() -> None:
        try:
            result = message_answer(
                accepted,
                on_agent_start=lambda: events.put(("started", None)),
                on_delta=lambda text: events.put(("delta", text)),
                on_action=lambda action: events.put(("action", action)),
            )
            events.put(("done", result.body))
        except Exception as error:  # message_answer recorded the failure (api.flow.messaging._fail)
            events.put(("error", error))
        finally:
            connections.close_all()

    context = contextvars.copy_context()  # the request's log fields
    thread = threading.Thread(target=context.run, args=(run,), name=f"stream-{accepted.message.pk}", daemon=True)
    thread.start()
    kind, value = events.get()
    if kind == "error":
        raise value
    return PostResult(status=200, body=b"", events=_events(events, first=(kind, value)))


def _events(events: "queue.Queue[tuple[str, Any]]", *, first: tuple[str, Any]) -> Iterator[bytes]:
    kind, value = first
    while True:
        if kind == "started":
            yield b": the agent is writing\n\n"  # a comment: the headers go out now
        elif kind == "delta":
            yield event("delta", render({"text": value}))
        elif kind == "action":
            yield event("action", render(represent(ActionSerializer, value)))
        elif kind == "done":
            for message in json.loads(value)["aiMessages"]:
                yield event("message", render(message))
            yield event("done", value)
            return
        else:
            error = to_application_error(value)
            if error is None:
                logger.error("stream failed", exc_info=value)
                error = ApplicationError()
            yield event("error", error_body(code=error.code, message=error.message, details=error.details))
            return
        kind, value = events.get()
