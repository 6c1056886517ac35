"""`make run` as a new user runs it: on the address in BIND (or PORT), with a curl line that works as printed.

A real `make run` (migrate, bootstrap_demo, runserver) on a fresh PostgreSQL database and a free loopback port, then
the printed request sent as printed. The server's process group is ours and is ended by its id.
"""

import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import environ
import pytest
import requests
from django.conf import settings

from api.demo import demo_key_file
from tests.live_gunicorn import database_of_its_own

DEADLINE_SECONDS = 120  # migrating a fresh database on a busy machine, then starting runserver

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


@pytest.fixture
def fresh_database():
    with database_of_its_own() as url:
        yield url


def env_database(url: str) -> dict:
    """The DATABASES entry the server process makes of `url` (its demo key file is named after it)."""
    database = environ.Env.db_url_config(url)
    database["ENGINE"] = "config.postgresql"  # as config/settings/base.py sets it
    return database


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)


@pytest.mark.parametrize("variable", ["BIND", "PORT"])
def test_make_run_serves_on_the_configured_address_and_prints_it(fresh_database, variable):
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": fresh_database,
        "LLM_BASE_URL": "",
        variable: f"127.0.0.1:{port}" if variable == "BIND" else str(port),
    }
    for name in ("REDIS_URL", "BIND" if variable == "PORT" else "PORT", "MAKEFLAGS", "MFLAGS"):
        env.pop(name, None)
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: runserver's reloader child ends with it
    )
    output: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, output), daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not any(line.lstrip().startswith("-d '") for line in seen):
            assert time.monotonic() < deadline, "".join(seen)
            assert process.poll() is None, "".join(seen)
            try:
                seen.append(output.get(timeout=1))
            except queue.Empty:
                continue
        text = "".join(seen)
        url = re.search(r"curl -s -X POST (\S+)", text)[1]
        key = re.search(r"X-API-Key: ([^']+)'", text)[1]
        body = shlex.split(re.search(r"^\s*-d ('.*')$", text, re.MULTILINE)[1])[0]

        # then the printed URL is the address the server listens on
        assert url.startswith(f"http://127.0.0.1:{port}/api/v1/channels/"), text
        while True:
            assert time.monotonic() < deadline and process.poll() is None, "".join(seen)
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        # and the printed request works as printed
        response = requests.post(
            url, data=body.encode(), headers={"X-API-Key": key, "Content-Type": "application/json"}, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.json()["aiMessages"][0]["sender_name"] == "Demo agent"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        database = env_database(fresh_database)
        demo_key_file(base_dir=Path(settings.BASE_DIR), database=database).unlink(missing_ok=True)
