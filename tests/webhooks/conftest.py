"""A real webhook receiver on loopback, and a channel whose webhook points at it."""

import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook

from webhooks.models import WebhookDelivery
from webhooks.services import webhook_set


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    delay: float = 0.0  # seconds before the answer: longer than WEBHOOK_TIMEOUT_SECONDS is "no answer"
    headers: dict[str, str] = field(default_factory=dict)
    echo: bool = False  # answer with the request's own body (a receiver that echoes the payload)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A threaded HTTP server on 127.0.0.1 that records every request and answers from a plan (then 200).
    `stop()` and `start()` again on the same port make a receiver that is down, then up."""

    def __init__(self, port: int = 0):
        self.requests: list[Received] = []
        self.plan: deque[Reply] = deque()
        self.answered = threading.Event()  # set after each answer that was sent
        self.port = port or free_port()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.append(
                    Received(path=self.path, headers={k.lower(): v for k, v in self.headers.items()}, body=body)
                )
                reply = receiver.plan.popleft() if receiver.plan else Reply()
                if reply.delay:
                    time.sleep(reply.delay)
                answer = body if reply.echo else reply.body
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the sender gave up waiting
                receiver.answered.set()

            do_GET = do_POST

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.block_on_close = False  # a handler still sleeping on a delay does not hold stop()
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, count: int, *, seconds: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + seconds
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} requests within {seconds} s"
            time.sleep(0.02)
        return self.requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def verified(received: Received, secret: str) -> dict:
    """The body, verified with the Standard Webhooks reference verifier (raises if the signature is wrong)."""
    return Webhook(secret).verify(received.body, received.headers)


def make_due(delivery: WebhookDelivery) -> None:
    """Skip the wait of the retry schedule."""
    from django.utils import timezone

    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


@pytest.fixture
def receiver():
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(autouse=True)
def loopback_allowed(settings):
    """Webhook URLs may point at the loopback receiver (as WEBHOOK_ALLOW_PRIVATE_HOSTS allows in
    development); the tests of the address rules take it away again."""
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    settings.WEBHOOK_TIMEOUT_SECONDS = 5.0


@pytest.fixture
def hooked(channel, receiver):
    """(channel, secret): the channel's webhook points at the receiver."""
    return channel, webhook_set(channel_id=channel.pk, url=receiver.url)
