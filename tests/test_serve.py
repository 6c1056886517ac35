"""`make serve` and the production server (README "Production"): it refuses the development SECRET_KEY, nodes
starting at once migrate one after the other, and gunicorn's own answers and log lines are JSON."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.core.checks import run_checks
from django.db import connection

from tests.live_gunicorn import (
    BASE_DIR,
    BIN,
    database_url_for_servers,
    free_port,
    gunicorn,
    server_env,
    stop,
    wait_until_up,
)

RUN_TIMEOUT_SECONDS = 120  # a start-up or a migrate on a busy machine; a bound, not a measurement

requires_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make_serve(env: dict[str, str], **popen) -> subprocess.Popen:
    """`make serve` as an operator runs it; `-o .venv/.synced`: the environment is installed already."""
    return subprocess.Popen(
        ["make", "--no-print-directory", "-o", ".venv/.synced", "serve"],
        cwd=BASE_DIR,
        env=env,
        start_new_session=True,  # its own process group: make, gunicorn and its workers end together
        **popen,
    )


def end_group(process: subprocess.Popen) -> None:
    """Stop the process group `make_serve` started (make, its gunicorn and the workers), by its id."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def _fresh_database() -> Iterator[str]:
    """An empty PostgreSQL database of its own (next to the test database), dropped afterwards: its URL."""
    conf = connection.settings_dict
    name = f"{conf['NAME']}_fresh_{uuid.uuid4().hex[:8]}"
    params = {"host": conf["HOST"] or "127.0.0.1", "port": conf["PORT"] or 5432, "user": conf["USER"]}
    if conf.get("PASSWORD"):
        params["password"] = conf["PASSWORD"]
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url_for_servers(name)
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrated(url: str) -> bool:
    with psycopg.connect(_libpq(url)) as conn:
        (migrated,) = conn.execute("SELECT to_regclass('django_migrations') IS NOT NULL").fetchone() or (False,)
        return migrated


def _libpq(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


# --- the development SECRET_KEY -----------------------------------------------------------------------------


@requires_make
def test_make_serve_refuses_the_development_secret_key_before_migrating(fresh_database):
    env = server_env(DATABASE_URL=fresh_database, BIND=f"127.0.0.1:{free_port()}")
    del env["SECRET_KEY"]

    process = make_serve(env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
    finally:
        end_group(process)  # should it have started a server after all

    assert process.returncode != 0
    assert "SECRET_KEY is the public development key" in err and "secrets.token_urlsafe(50)" in err
    assert not _migrated(fresh_database)  # refused before `migrate` touched the database


def test_gunicorn_with_our_config_refuses_the_development_secret_key():
    env = server_env(DATABASE_URL=database_url_for_servers())
    del env["SECRET_KEY"]

    result = subprocess.run(
        [str(BIN / "gunicorn"), "config.wsgi:application", "--config", "config/gunicorn.py", "--bind", "127.0.0.1:0"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )

    assert result.returncode == 1
    assert result.stderr.startswith("Refusing to start: SECRET_KEY is the public development key")


@requires_make
def test_make_serve_starts_with_the_development_key_when_debug_is_on(tmp_path, fresh_database):
    port = free_port()
    env = server_env(DATABASE_URL=fresh_database, BIND=f"127.0.0.1:{port}", DEBUG="true")
    del env["SECRET_KEY"]
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = make_serve(env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process, log_path)  # migrated (migrate_locked), then served
    finally:
        end_group(process)


def test_check_deploy_reports_the_development_secret_key(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = settings.DEVELOPMENT_SECRET_KEY
    assert [error.id for error in run_checks(include_deployment_checks=True, tags=["production"])] == ["channels.E001"]

    settings.SECRET_KEY = "a-real-key-" + uuid.uuid4().hex * 2
    assert run_checks(include_deployment_checks=True, tags=["production"]) == []


# --- two nodes starting at once on a fresh database ------------------------------------------------------


@pytest.fixture
def fresh_database() -> Iterator[str]:
    with _fresh_database() as url:
        yield url


def test_nodes_running_the_serve_time_migrate_at_once_on_a_fresh_database_all_succeed(fresh_database):
    """Plain `migrate` twice at once on an empty database: one of them fails creating a table type, a content
    type or a permission the other created a moment before. `make serve` runs `migrate_locked`."""
    env = server_env(DATABASE_URL=fresh_database)
    nodes = [
        subprocess.Popen(
            [sys.executable, "manage.py", "migrate_locked", "--verbosity", "0"],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        outputs = [node.communicate(timeout=RUN_TIMEOUT_SECONDS)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait(timeout=10)

    assert [node.returncode for node in nodes] == [0, 0, 0], outputs
    with psycopg.connect(_libpq(fresh_database)) as conn:
        (applied,) = conn.execute("SELECT count(*) FROM django_migrations").fetchone()
        (waiting,) = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
    assert applied > 0 and waiting == 0  # migrated once, and no node still holds the lock


@requires_make
def test_make_serve_without_its_database_ends_with_one_sentence():
    """The production section's first trap: the database named by DATABASE_URL was never created."""
    missing = database_url_for_servers(f"never_created_{uuid.uuid4().hex[:8]}")
    env = server_env(DATABASE_URL=missing, BIND=f"127.0.0.1:{free_port()}")

    process = make_serve(env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
    finally:
        end_group(process)

    assert process.returncode != 0
    assert "Traceback" not in err, err
    sentence = [line for line in err.splitlines() if line.strip() and not line.startswith("make")]
    assert len(sentence) == 1, err
    assert sentence[0].startswith("Cannot reach the database 'never_created_") and "create the database" in sentence[0]


# --- what gunicorn itself answers: malformed HTTP ----------------------------------------------------------


def raw_request(port: int, data: bytes) -> bytes:
    """Send bytes as they are, read the answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


MALFORMED = {  # what gunicorn refuses before Django sees the request, and the status it gives
    "bad Content-Length": (b"POST /api/v1/channels/x/messages HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400),
    "two Content-Lengths": (
        b"POST /api/v1/channels/x/messages HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        400,
    ),
    "folded header": (b"GET /healthz HTTP/1.1\r\nX-Note: one\r\n two\r\n\r\n", 400),
    "NUL in a header": (b"GET /healthz HTTP/1.1\r\nX-Note: a\x00b\r\n\r\n", 400),
    "bad header name": (b"GET /healthz HTTP/1.1\r\nX Note: a\r\n\r\n", 400),
    "bare LF": (b"GET /healthz HTTP/1.1\nX-Note: a\n\n", 400),
    # longer than gunicorn's 4094 bytes, shorter than one read, so that gunicorn has read all of it
    "request line too long": (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
}


def with_host(data: bytes) -> bytes:
    """The request with a Host header the server allows, after its request line."""
    line, sep, rest = data.partition(b"\r\n" if b"\r\n" in data else b"\n")
    return line + sep + b"Host: 127.0.0.1" + sep + rest


@pytest.fixture(scope="module")
def live_server_log(tmp_path_factory, django_db_setup, django_db_blocker):
    """One gunicorn for the malformed-HTTP tests, on a migrated database of its own with the demo channel and
    key."""
    tmp = tmp_path_factory.mktemp("gunicorn")
    with django_db_blocker.unblock(), _fresh_database() as url:
        yield from _served(tmp, server_env(DATABASE_URL=url))


def _served(tmp, env):
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=BASE_DIR, env=env, check=True)
    demo = subprocess.run(
        [sys.executable, "manage.py", "bootstrap_demo", "--json"],
        cwd=BASE_DIR,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    with gunicorn(tmp / "server.log", DATABASE_URL=env["DATABASE_URL"]) as server:
        server.demo = json.loads(demo.stdout)
        yield server


def json_error_of(answer: bytes, status: int) -> dict:
    """The one HTTP response in `answer`, checked: the status, a JSON body of the contract's error shape."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} "), answer[:300]
    headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in lines[1:]}
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)
    assert error["success"] is False and set(error) == {"success", "error"}
    assert set(error["error"]) == {"code", "message", "details"} and error["error"]["message"].endswith(".")
    return error["error"]


@pytest.mark.parametrize("name", MALFORMED)
def test_gunicorn_answers_malformed_http_with_the_json_error_body(live_server_log, name):
    data, status = MALFORMED[name]

    answer = raw_request(live_server_log.port, with_host(data))

    assert json_error_of(answer, status)["code"] == "invalid_request"


def test_a_malformed_chunked_body_is_a_400_not_a_500(live_server_log):
    """gunicorn decodes a chunked body only as the view reads it, so this one reaches the application."""
    demo = live_server_log.demo
    head = (
        f"POST /api/v1/channels/{demo['channelId']}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-API-Key: {demo['apiKey']}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    )

    answer = raw_request(live_server_log.port, head.encode() + b"zz\r\n{}\r\n0\r\n\r\n")

    assert json_error_of(answer, 400)["code"] == "invalid_request"


def test_gunicorn_logs_json_lines_like_the_application(live_server_log):
    raw_request(live_server_log.port, with_host(MALFORMED["NUL in a header"][0]))
    raw_request(live_server_log.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    stop(live_server_log.process)  # and the lines of a graceful stop

    lines = live_server_log.json_log_lines()  # every line is one JSON object
    events = [(line["logger"], line["level"], line["event"]) for line in lines]
    assert any(lg == "gunicorn.error" and lv == "info" and ev.startswith("Starting gunicorn") for lg, lv, ev in events)
    assert any(lg == "gunicorn.error" and lv == "warning" and "Invalid request" in ev for lg, lv, ev in events)
    assert any(ev == "request_finished" for _, _, ev in events)  # and the application's own lines beside them
    assert all("timestamp" in line for line in lines)
