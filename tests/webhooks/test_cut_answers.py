"""A receiver's answer counts only when it comes whole, 2xx, within WEBHOOK_TIMEOUT_SECONDS (README "Webhooks").
Each hostile receiver is a raw TCP server on loopback that reads the request and answers as scripted: a
status line and then nothing, headers a byte a second, a body shorter than its Content-Length, a body that
drips past the deadline."""

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from webhooks.delivery import delivery_attempt
from webhooks.models import WebhookDelivery
from webhooks.services import event_emit, webhook_set

Script = Callable[[socket.socket], None]


def status_line_then_close(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")


def headers_a_byte_a_second(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for byte in b"X-Slow: " + b"a" * 30:
        conn.sendall(bytes([byte]))
        time.sleep(0.5)


def body_shorter_than_announced(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")


def body_dripping_past_the_deadline(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n")
    for _ in range(30):
        conn.sendall(b"x")
        time.sleep(0.5)


def whole_answer(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")


@contextmanager
def hostile_receiver(script: Script) -> Iterator[str]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                received = b""
                try:
                    while b"\r\n\r\n" not in received:
                        received += conn.recv(65536)
                    head, _, body = received.partition(b"\r\n\r\n")
                    length = int(
                        next(
                            line.split(b":")[1]
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length")
                        )
                    )
                    while len(body) < length:
                        body += conn.recv(65536)
                    script(conn)
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    finally:
        server.close()


@pytest.mark.parametrize(
    ("script", "outcome"),
    [
        (status_line_then_close, "connection_failed"),
        (headers_a_byte_a_second, "timeout"),
        (body_shorter_than_announced, "connection_failed"),
        (body_dripping_past_the_deadline, "timeout"),
    ],
)
def test_an_answer_cut_or_late_after_a_2xx_status_line_is_a_failed_attempt_retried(channel, settings, script, outcome):
    settings.WEBHOOK_TIMEOUT_SECONDS = 2.0
    with hostile_receiver(script) as url:
        webhook_set(channel_id=channel.pk, url=url)
        event = event_emit(channel_id=channel.pk, type="conversation.closed", data={"conversation": {}})
        delivery = event.deliveries.get()
        started = time.monotonic()

        made = delivery_attempt(delivery_id=delivery.pk)

    assert made is not None
    assert made.outcome == outcome
    assert time.monotonic() - started < 5  # bounded by the time limit
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.PENDING and delivery.next_attempt_at is not None


def test_a_whole_2xx_answer_delivers(channel):
    with hostile_receiver(whole_answer) as url:
        webhook_set(channel_id=channel.pk, url=url)
        event = event_emit(channel_id=channel.pk, type="conversation.closed", data={"conversation": {}})
        made = delivery_attempt(delivery_id=event.deliveries.get().pk)

    assert (made.outcome, made.status_code) == ("succeeded", 204)
