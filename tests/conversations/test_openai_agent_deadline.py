"""The agent's `timeout_seconds` is a deadline for the whole call, against providers that drip.

A raw socket server on loopback stands in for a hostile or broken provider: it sends its status line and
headers, or its body, one byte at a time, each byte well inside any per-read timeout. The call must end as
`agent_timeout` within a small multiple of the agent's timeout, in threads (the tests) and under gevent
(production's gunicorn worker, in a subprocess here).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conversations.agents.errors import AgentTimeout
from conversations.agents.openai_agent import OpenAICompatibleAgent, transcribe_audio
from conversations.models import Message
from tests.conftest import Api, error_of
from tests.conversations.test_openai_agent import KEY_VAR, completion, make_agent, text
from tests.factories import AIAgentFactory, ChannelFactory

TIMEOUT = 1.5  # the agent's timeout_seconds in these tests
BOUND = 3 * TIMEOUT  # "within a small multiple of the timeout"
DRIP_INTERVAL = 0.5  # seconds between two bytes: each read gets a byte long before any per-read timeout
# Without a deadline the call would last as long as the drip (minutes for a real answer): the server gives
# up dripping after this long and sends the rest at once, so a regression fails in bounded time.
DRIP_FOR = 4 * BOUND
REPO = Path(__file__).resolve().parents[2]


class DripServer:
    """Serves HTTP/1.1 answers on 127.0.0.1, dripping the headers (`drip="headers"`) or the body
    (`drip="body"`) a byte every DRIP_INTERVAL, for at most DRIP_FOR seconds, or sending them at once
    (`drip="none"`). One thread per connection; connections are kept alive."""

    def __init__(self, *, drip: str, body: bytes):
        self.drip, self.body = drip, body
        self.requests = self.connections = 0
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        """Answers the requests of one kept-alive connection until the client closes it."""
        self.connections += 1
        with conn:
            conn.settimeout(DRIP_FOR)
            try:
                while self._read_request(conn):
                    self.requests += 1
                    head = (
                        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n"
                    ).encode()
                    if self.drip == "headers":
                        self._drip(conn, head)
                        conn.sendall(self.body)
                    elif self.drip == "body":
                        conn.sendall(head)
                        self._drip(conn, self.body)
                    else:
                        conn.sendall(head + self.body)
            except OSError:
                pass  # the client hung up: what a deadline does

    @staticmethod
    def _read_request(conn: socket.socket) -> bool:
        """Reads one request (head and body); False when the client closed the connection instead."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            rest += chunk
        return True

    def _drip(self, conn: socket.socket, data: bytes) -> None:
        until = time.monotonic() + DRIP_FOR
        for index in range(len(data)):
            if time.monotonic() > until or self._stop.is_set():
                conn.sendall(data[index:])
                return
            conn.sendall(data[index : index + 1])
            time.sleep(DRIP_INTERVAL)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for thread in self._threads:
            thread.join(timeout=DRIP_FOR + 5)


@pytest.fixture
def drip_server() -> Iterator[Callable[..., DripServer]]:
    servers: list[DripServer] = []

    def start(*, drip: str, body: bytes | None = None) -> DripServer:
        server = DripServer(drip=drip, body=body if body is not None else json.dumps(completion("hello")).encode())
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, "sk-deadline-test")


def timed(call):
    started = time.monotonic()
    try:
        call()
    except AgentTimeout as error:
        return error, time.monotonic() - started
    raise AssertionError(f"answered after {time.monotonic() - started:.1f} s instead of timing out")


@pytest.mark.parametrize("drip", ["headers", "body"])
def test_a_provider_that_drips_its_answer_times_out_at_the_deadline(drip_server, drip):
    # given: a provider that sends a byte every half second
    server = drip_server(drip=drip)
    agent = make_agent(base_url=server.base_url, timeout_seconds=TIMEOUT)

    # when
    error, seconds = timed(lambda: OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")]))

    # then: a timeout, at the deadline rather than when the drip ends
    assert error.details == {"timeoutSeconds": TIMEOUT}
    assert seconds < BOUND
    assert server.requests == 1  # a timed-out attempt is not retried


def test_a_transcription_that_drips_times_out_at_the_deadline(drip_server):
    server = drip_server(drip="body", body=json.dumps({"text": "Where is my order?"}).encode())
    agent = make_agent(base_url=server.base_url, timeout_seconds=TIMEOUT)

    error, seconds = timed(
        lambda: transcribe_audio(agent=agent, data=b"OggS\x00voice", filename="voice.ogg", mime_type="audio/ogg")
    )

    assert error.details == {"timeoutSeconds": TIMEOUT}
    assert seconds < BOUND


def test_the_deadline_holds_for_a_reused_connection(drip_server):
    # given: a first call that the provider answers at once, on a connection kept alive
    server = drip_server(drip="none")
    agent = make_agent(base_url=server.base_url, timeout_seconds=TIMEOUT)
    assert OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")]).texts == ["hello"]

    # when: the next call goes over the same connection, and the provider now drips
    server.drip = "body"
    error, seconds = timed(lambda: OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "again")]))

    # then
    assert (server.connections, server.requests) == (1, 2)
    assert error.details == {"timeoutSeconds": TIMEOUT}
    assert seconds < BOUND


def test_the_messages_api_answers_504_at_the_deadline(drip_server, api_key, workspace, client):
    # given: an agent whose provider drips its body
    server = drip_server(drip="body")
    agent = AIAgentFactory(
        workspace=workspace,
        provider="openai",
        base_url=server.base_url,
        model="test-model",
        api_key_env_var=KEY_VAR,
        timeout_seconds=TIMEOUT,
    )
    api = Api(client, ChannelFactory(workspace=workspace, agent=agent), api_key)

    # when
    started = time.monotonic()
    response = api.post()
    seconds = time.monotonic() - started

    # then: 504, the message kept, nothing charged
    assert response.status_code == 504, response.content
    assert error_of(response)["code"] == "agent_timeout"
    assert seconds < BOUND
    inbound = Message.objects.get()
    assert (inbound.status, inbound.error_code, inbound.credits_reserved) == ("FAILED", "agent_timeout", 0)
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (100, 0)


GEVENT_CALL = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import json, sys, time

    import django

    django.setup()
    from conversations.agents.errors import AgentTimeout
    from conversations.agents.openai_agent import OpenAICompatibleAgent
    from tests.conversations.test_openai_agent import make_agent, text

    agent = make_agent(base_url=sys.argv[1], timeout_seconds=float(sys.argv[2]))
    started = time.monotonic()
    try:
        OpenAICompatibleAgent().reply(agent=agent, history=[text("user", "hi")])
        outcome = "answered"
    except AgentTimeout:
        outcome = "agent_timeout"
    print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started}))
    """
)


@pytest.mark.parametrize("drip", ["headers", "body"])
def test_the_deadline_holds_under_gevent(drip_server, drip):
    # given: production's setting, a monkey-patched process (sockets and context variables per greenlet)
    server = drip_server(drip=drip)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", KEY_VAR: "sk-deadline-test"}

    # when
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_CALL, server.base_url, str(TIMEOUT)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=DRIP_FOR + 30,
    )

    # then
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "agent_timeout", result
    assert result["seconds"] < BOUND
