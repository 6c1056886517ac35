"""A real gunicorn on loopback, started as `make serve` starts it (config/gunicorn.py, the gevent worker), for
tests that need the production server: its pool, its worker, its logs. Every process is ours, stopped by pid."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

BASE_DIR = Path(settings.BASE_DIR)
BIN = Path(sys.executable).parent
START_TIMEOUT_SECONDS = 90  # a worker imports Django and the OpenAI SDK; the machine may be busy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_for_servers(name: str | None = None) -> str:
    """The URL of the database this test runs on (pytest-django's test database), or of another database
    `name` on its server, for a server process. A Unix socket's directory (the project-local PostgreSQL)
    goes in ?host=."""
    conf = connection.settings_dict
    password = f":{quote(conf['PASSWORD'])}" if conf.get("PASSWORD") else ""
    name = name or conf["NAME"]
    host, port = conf["HOST"] or "127.0.0.1", conf["PORT"] or 5432
    if host.startswith("/"):
        return f"postgres://{conf['USER']}{password}@:{port}/{name}?host={quote(host)}"
    return f"postgres://{conf['USER']}{password}@{host}:{port}/{name}"


def server_env(**overrides: str) -> dict[str, str]:
    """The environment of a production server: the base settings, a throwaway SECRET_KEY, the built-in agent,
    no rate limit, one worker, no Redis (the cache is the process's own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LLM_", "PROMETHEUS_"))}
    env.pop("REDIS_URL", None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1",
            "API_RATE_LIMIT_PER_MINUTE": "0",
            "WEB_CONCURRENCY": "1",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[str]:
        return [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]

    def json_log_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log_lines()]


def wait_until_up(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the server did not answer /healthz within {START_TIMEOUT_SECONDS} s")


def stop(process: subprocess.Popen) -> None:
    """TERM (gunicorn's graceful stop), then KILL if it has not ended in 30 s; only this process (its workers
    end with it)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def gunicorn(log_path: Path, **env: str) -> Iterator[Server]:
    """gunicorn with config/gunicorn.py on a free loopback port, its output in `log_path`; stopped after."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "config.wsgi:application",
                "--config",
                "config/gunicorn.py",
                "--bind",
                f"127.0.0.1:{port}",
            ],
            cwd=BASE_DIR,
            env=server_env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        server = Server(port=port, process=process, log_path=log_path)
        wait_until_up(server.url, process, log_path)
        yield server
    finally:
        stop(process)
