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


def event(name: str, data: bytes, *, id: str) -> bytes:
    """One event with its `id:` (see `finished_events`). `data` is compact JSON: a JSON text holds no line
    break outside its strings, and json escapes those inside, so it fits the one `data:` line."""
    return b"id: " + id.encode() + b"\nevent: " + name.encode() + b"\ndata: " + data + b"\n\n"


def finished_events(body: bytes) -> Iterator[bytes]:
    """The end of a stream whose answer is recorded: a `message` event for each `aiMessages` item, then
    `done` with the 200 body `body`. The same events, ids included, whether the answer was just written or
    is replayed to a retry with the idempotency key: each `message` event's id is its reply's id, `done`'s
    the contact's message's id. (A `delta` is `<message id>:<n>`, its n-th piece, and `error` the contact's
    message's id too; deltas are not stored, so a replay has none.)"""
    answer = json.loads(body)
    for message in answer["aiMessages"]:
        yield event("message", render(message), id=message["id"])
    yield event("done", body, id=answer["messageId"])


def replay_events(body: bytes) -> Iterator[bytes]:
    """A replayed answer, for a retry that asks for a stream: the stored 200 body as the stream's end (its
    `message` events and `done`, as they first went out)."""
    return finished_events(body)


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
    return PostResult(status=200, body=b"", events=_events(events, first=(kind, value), message_id=accepted.message.pk))


def _events(events: "queue.Queue[tuple[str, Any]]", *, first: tuple[str, Any], message_id: str) -> Iterator[bytes]:
    kind, value = first
    deltas = actions = 0
    while True:
        if kind == "started":
            yield b": the agent is writing\n\n"  # a comment: the headers go out now
        elif kind == "delta":
            deltas += 1
            yield event("delta", render({"text": value}), id=f"{message_id}:{deltas}")
        elif kind == "action":
            actions += 1
            yield event("action", render(represent(ActionSerializer, value)), id=f"{message_id}:action:{actions}")
        elif kind == "done":
            yield from finished_events(value)
            return
        else:
            error = to_application_error(value)
            if error is None:
                logger.error("stream failed", exc_info=value)
                error = ApplicationError()
            yield event(
                "error", error_body(code=error.code, message=error.message, details=error.details), id=message_id
            )
            return
        kind, value = events.get()
