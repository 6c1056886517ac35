"""The asynchronous mode and streaming under load (README "Replies later", "Streaming"), on loopback:

    .venv/bin/python -m bench.replies_later [--requests 300] [--clients 8] [--streams 50,200]

Creates its own PostgreSQL database (`channels_bench_replies`, dropped at the end) on the server of
DATABASE_URL, migrates, makes a demo channel whose OpenAI-compatible agent answers in 2 s (bench/llm_stub.py,
`/lat/2000/v1`, streamed in 20 pieces), starts gunicorn as `make serve` does (config/gunicorn.py, gevent) with
no broker, so the answers run in the server's own background greenlets (with `--broker REDIS_URL`: in a
Celery worker), and measures:

1. 202 latency: `--requests` POSTs with `Prefer: respond-async`, a new contact each, from `--clients`
   keep-alive connections; p50/p99 of the time to the 202, then how long until every message is answered.
2. N concurrent streams: N clients at once with `Accept: text/event-stream`; per stream the time to the
   first `delta` and to `done`, and how many ended with `done`.

Every process it starts is stopped by pid; traffic goes to 127.0.0.1 only.
"""

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from http.client import HTTPConnection
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DB_NAME = "channels_bench_replies"
BODY = {"type": "TEXT", "content": {"text": {"body": "How long does shipping take?"}}}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _count(db: psycopg.Connection, status: str) -> int:
    row = db.execute(
        "SELECT count(*) FROM conversations_message WHERE direction = 'INBOUND' AND status = %s", [status]
    ).fetchone()
    return int(row[0]) if row is not None else 0


def _admin_url() -> str:
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    return url.rsplit("/", 1)[0] + "/postgres"


def _post(conn: HTTPConnection, path: str, key: str, identifier: str, headers: dict[str, str]):
    conn.request(
        "POST",
        path,
        json.dumps({**BODY, "contactIdentifier": identifier}),
        {"X-API-Key": key, "Content-Type": "application/json", **headers},
    )
    return conn.getresponse()


def bench_async(port: int, path: str, key: str, requests: int, clients: int, db_url: str) -> dict:
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    per_client = requests // clients

    def client(n: int) -> None:
        conn = HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(per_client):
            started = time.perf_counter()
            response = _post(conn, path, key, f"async-{n}-{i}@bench.example", {"Prefer": "respond-async"})
            response.read()
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)
                statuses.append(response.status)
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    sent = time.monotonic() - started
    with psycopg.connect(db_url, autocommit=True) as db:
        while True:
            pending = _count(db, "PENDING")
            if not pending or time.monotonic() - started > 300:
                break
            time.sleep(0.2)
        answered = _count(db, "ANSWERED")
    return {
        "requests": len(latencies),
        "status202": statuses.count(202),
        "p50Ms": round(statistics.median(latencies), 1),
        "p99Ms": round(percentile(latencies, 99), 1),
        "sentSeconds": round(sent, 2),
        "allAnsweredSeconds": round(time.monotonic() - started, 2),
        "answered": answered,
        "stillPending": pending,
    }


def bench_streams(port: int, path: str, key: str, count: int) -> dict:
    first: list[float] = []
    total: list[float] = []
    done = 0
    lock = threading.Lock()
    barrier = threading.Barrier(count)

    def client(n: int) -> None:
        nonlocal done
        conn = HTTPConnection("127.0.0.1", port, timeout=120)
        barrier.wait(60)
        started = time.perf_counter()
        response = _post(conn, path, key, f"stream-{count}-{n}@bench.example", {"Accept": "text/event-stream"})
        seen_first = None
        ended = False
        event = ""
        while True:
            line = response.readline()
            if not line:
                break
            if line.startswith(b"event: "):
                event = line[7:].strip().decode()
                if event == "delta" and seen_first is None:
                    seen_first = time.perf_counter() - started
                if event == "done":
                    ended = True
            if ended and line == b"\n":
                break
        conn.close()
        with lock:
            if seen_first is not None:
                first.append(seen_first * 1000)
            if ended:
                done += 1
                total.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    return {
        "streams": count,
        "done": done,
        "firstDeltaP50Ms": round(statistics.median(first), 1) if first else None,
        "firstDeltaP99Ms": round(percentile(first, 99), 1) if first else None,
        "doneP50Ms": round(statistics.median(total), 1) if total else None,
        "doneP99Ms": round(percentile(total, 99), 1) if total else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--streams", default="50,200")
    parser.add_argument(
        "--broker",
        default="",
        help="a Redis URL: the answers go through it to a Celery worker (threads pool, 64) instead of the "
        "server's own greenlets",
    )
    args = parser.parse_args()
    admin = _admin_url()
    db_url = admin.rsplit("/", 1)[0] + f"/{DB_NAME}"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
        db.execute(f"CREATE DATABASE {DB_NAME}")
    stub_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LLM_", "REDIS_"))}
    env.update(
        {
            "DATABASE_URL": db_url,
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1",
            "API_RATE_LIMIT_PER_MINUTE": "0",
            "WEB_CONCURRENCY": "1",
            "LOG_LEVEL": "WARNING",
            "LLM_BASE_URL": f"http://127.0.0.1:{stub_port}/lat/2000/v1",
            "LLM_API_KEY": "sk-bench",
            "LLM_MODEL": "bench",
        }
    )
    if args.broker:
        env["REDIS_URL"] = args.broker
    processes: list[subprocess.Popen] = []
    try:
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=600)
        demo = json.loads(
            subprocess.run(
                [*manage, "bootstrap_demo", "--json"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120
            ).stdout
        )
        subprocess.run(
            [*manage, "credits", "grant", "--workspace", demo["workspaceId"], "--amount", "1000000"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        processes.append(
            subprocess.Popen([sys.executable, "-m", "bench.llm_stub", "--port", str(stub_port)], cwd=ROOT, env=env)
        )
        processes.append(
            subprocess.Popen(
                [str(BIN / "gunicorn"), "config.wsgi:application", "--config", "config/gunicorn.py"]
                + ["--bind", f"127.0.0.1:{web_port}"],
                cwd=ROOT,
                env=env,
            )
        )
        if args.broker:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "threads"]
                    + ["--concurrency", "64", "--loglevel", "WARNING"],
                    cwd=ROOT,
                    env=env,
                )
            )
        wait_http(f"http://127.0.0.1:{stub_port}/healthz")
        wait_http(f"http://127.0.0.1:{web_port}/healthz")
        path = f"/api/v1/channels/{demo['channelId']}/messages"
        results = {"async": bench_async(web_port, path, demo["apiKey"], args.requests, args.clients, db_url)}
        for count in (int(n) for n in args.streams.split(",")):
            results[f"streams{count}"] = bench_streams(web_port, path, demo["apiKey"], count)
        print(json.dumps(results, indent=2))
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
