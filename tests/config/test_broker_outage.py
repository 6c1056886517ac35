"""A Redis that hangs or is gone, met by a real gunicorn (`make serve`'s server, tests/live_gunicorn.py) whose
REDIS_URL points at it (README "Production", config/broker.py).

The hung broker is a TCP server bound here on loopback that accepts every connection and never answers a
byte; the gone one is a loopback port nothing listens on. Every broker call is bounded, the request's
database connection goes back to the pool before the hand-over, a process that found Redis down falls back
at once for a while (the Celery hand-over and the rate limiter alike), the messages are still answered, once,
and their webhook events are still sent (by the web process, as without a broker); /readyz says the broker is
down."""

import http.client
import json
import secrets
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from conversations.models import Message
from tests.config.test_database_outage import live_channel  # noqa: F401  (a fixture)
from tests.conftest import SEED_TEXT, assert_books_hold
from tests.live_gunicorn import database_url_for_servers, gunicorn
from tests.webhooks.conftest import Receiver, free_port
from webhooks.models import WebhookEvent
from webhooks.services import webhook_set

WAIT_SECONDS = 30


@contextmanager
def hung_redis() -> Iterator[str]:
    """A loopback server that accepts connections and never answers: a Redis whose process hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(512)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        stop.set()
        server.close()
        for conn in held:
            conn.close()


def request(server, method: str, path: str, key: str, body: dict | None = None, **headers: str):
    """One request on its own connection; (status, seconds, JSON body). The client waits WAIT_SECONDS: a
    request that hangs fails the test."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_SECONDS)
    started = time.monotonic()
    try:
        conn.request(
            method,
            path,
            json.dumps(body) if body is not None else None,
            {"X-API-Key": key, "Content-Type": "application/json", **headers},
        )
        response = conn.getresponse()
        data = response.read()
        return response.status, time.monotonic() - started, json.loads(data) if data else None
    finally:
        conn.close()


def say(channel, key, server, identifier: str, **headers: str):
    return request(
        server,
        "POST",
        f"/api/v1/channels/{channel.pk}/messages",
        key,
        {**SEED_TEXT, "contactIdentifier": identifier},
        **headers,
    )


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        assert time.monotonic() < deadline, f"not within {WAIT_SECONDS} s: {what}"
        time.sleep(0.1)


@pytest.fixture
def receiver():
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def server_with_redis_at(tmp_path, redis_url: str, secret_key: str):
    return gunicorn(
        tmp_path / "server.log",
        DATABASE_URL=database_url_for_servers(),
        SECRET_KEY=secret_key,  # the webhook's secret is encrypted under it
        REDIS_URL=redis_url,
        # a small pool, so requests that held their connection through a hand-over would soon run out of it
        DB_POOL_MIN_SIZE="1",
        DB_POOL_MAX_SIZE="2",
        DB_POOL_TIMEOUT="5",
        API_RATE_LIMIT_PER_MINUTE="600",  # the limiter asks Redis too
        WEBHOOK_ALLOW_PRIVATE_HOSTS="127.0.0.1",
        WEBHOOK_SWEEP_SECONDS="1",
    )


@pytest.mark.parametrize("outage", ["hung", "refused"])
def test_a_redis_that_hangs_or_is_gone_costs_requests_a_bounded_moment_and_loses_nothing(
    live_channel,  # noqa: F811
    receiver,
    tmp_path,
    outage,
    settings,
):
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    settings.SECRET_KEY = secrets.token_urlsafe(50)
    channel, key = live_channel
    webhook_set(channel_id=channel.pk, url=receiver.url)
    with hung_redis() as hung:
        redis_url = hung if outage == "hung" else f"redis://127.0.0.1:{free_port()}/0"
        with server_with_redis_at(tmp_path, redis_url, settings.SECRET_KEY) as server:
            # when: an asynchronous message (its task cannot be queued)
            status, seconds, body = say(channel, key, server, "async@example.com", Prefer="respond-async")
            assert status == 202, body
            # (the process's first API request, on a shared machine: bounded, not instant; the broker's reconnect
            # attempts took 8 s here before, a hung broker forever)
            assert seconds < 5, f"the 202 took {seconds:.1f} s"
            async_id = body["messageId"]

            # and: ten concurrent synchronous messages, each writing a webhook event, on a pool of two
            results: list = [None] * 10

            def send(index: int) -> None:
                results[index] = say(channel, key, server, f"sync-{index}@example.com")

            threads = [threading.Thread(target=send, args=(index,)) for index in range(10)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT_SECONDS * 2)
            assert [result[0] for result in results] == [200] * 10, [result[2] for result in results]

            # and: the next requests, one after the other, find the process already knows Redis is down
            latencies = [say(channel, key, server, f"later-{index}@example.com")[1] for index in range(6)]
            assert statistics.median(latencies) < 0.4, latencies

            # and: a close, which writes its event too
            conversation_id = results[0][2]["conversationId"]
            status, seconds, _ = request(server, "POST", f"/api/v1/conversations/{conversation_id}/close", key)
            assert status == 200
            assert seconds < 3

            # then: /readyz says the broker is down, within its bound; /healthz still lives
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_SECONDS)
            started = time.monotonic()
            conn.request("GET", "/readyz")
            ready = conn.getresponse()
            readiness = json.loads(ready.read())
            assert ready.status == 503
            assert readiness["checks"]["broker"] == "unreachable"
            assert time.monotonic() - started < 3
            conn.close()

            # and: the asynchronous message is answered, once, by the web process
            wait_for(
                lambda: Message.objects.get(pk=async_id).status == Message.Status.ANSWERED,
                "the async message answered without a broker",
            )
            assert Message.objects.filter(reply_to_id=async_id).count() == 1

            # and: every event reaches the receiver, sent by the web process
            events = WebhookEvent.objects.filter(channel_id=channel.pk)
            wait_for(lambda: len({r.headers["webhook-id"] for r in receiver.requests}) >= events.count(), "events")
    assert events.count() == 1 + 10 + 6 + 1
    assert {r.headers["webhook-id"] for r in receiver.requests} == set(events.values_list("pk", flat=True))
    assert not Message.objects.filter(status=Message.Status.PENDING).exists()
    assert_books_hold()
