"""Bursts of short messages (README "Bursts of short messages"), on loopback:

    .venv/bin/python -m bench.bursts [--contacts 20] [--window-ms 800] [--apart-ms 200] [--db NAME]

Creates its own PostgreSQL database (`--db`, default `channels_bench_bursts`, dropped at the end) on the server
of DATABASE_URL, migrates, makes the demo channel (`bootstrap_demo`) whose OpenAI-compatible agent answers in
1 s (bench/llm_stub.py, `/lat/1000/v1`), starts gunicorn as `make serve` does (config/gunicorn.py, gevent, one
worker), and measures, with the CPU of the worker and of the database's backends:

1. single: `--contacts` contacts at once each send one message (the `queue` mode, the default): CPU per
   message, agent calls per message;
2. queue burst: the same contacts' three messages `--apart-ms` apart, still in the `queue` mode;
3. burst: the channel in the `latest` mode with `--window-ms`, `--contacts` contacts at once each send three
   messages `--apart-ms` apart: CPU per burst, agent calls per burst, answered and superseded messages.

The goal (issue #26): a burst costs one agent call and about one message's CPU. Every process it starts is
stopped by pid; traffic goes to 127.0.0.1 only.
"""

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from http.client import HTTPConnection
from pathlib import Path

import psutil
import psycopg

from bench.common import HOST, PYTHON, ROOT, CpuMeter, free_port, wait_http

TEXTS = ("hi", "I have a question", "about my order")


def _agent_calls(stub_port: int) -> int:
    with urllib.request.urlopen(f"http://{HOST}:{stub_port}/stats", timeout=5) as response:
        return int(json.loads(response.read())["chatRequests"])


def _conversation(port: int, path: str, key: str, identifier: str, texts: tuple[str, ...], apart: float) -> list:
    """The texts of one contact, each from its own connection `apart` seconds after the one before; the
    statuses and bodies."""
    answers: list = [None] * len(texts)

    def send(index: int) -> None:
        time.sleep(index * apart)
        conn = HTTPConnection(HOST, port, timeout=120)
        try:
            body = {"type": "TEXT", "contactIdentifier": identifier, "content": {"text": {"body": texts[index]}}}
            conn.request("POST", path, json.dumps(body), {"X-API-Key": key, "Content-Type": "application/json"})
            response = conn.getresponse()
            answers[index] = (response.status, json.loads(response.read()))
        finally:
            conn.close()

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    return answers


def _round(meter: CpuMeter, stub_port: int, contacts: int, send) -> dict:
    calls = _agent_calls(stub_port)
    meter.start()
    threads = [threading.Thread(target=send, args=(index,)) for index in range(contacts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    cpu = meter.stop(completed=contacts)
    return {"cpu": cpu, "agentCalls": _agent_calls(stub_port) - calls}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20)
    parser.add_argument("--window-ms", type=int, default=800)
    parser.add_argument("--apart-ms", type=int, default=200)
    parser.add_argument("--db", default="channels_bench_bursts")
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres").rsplit("/", 1)[0]
    admin, db_url = f"{server}/postgres", f"{server}/{args.db}"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{args.db}"')
    stub_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LLM_", "REDIS_"))}
    env.update(
        {
            "DATABASE_URL": db_url,
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "false",
            "ALLOWED_HOSTS": HOST,
            "API_RATE_LIMIT_PER_MINUTE": "0",
            "WEB_CONCURRENCY": "1",
            "LOG_LEVEL": "WARNING",
            "LLM_BASE_URL": f"http://{HOST}:{stub_port}/lat/1000/v1",
            "LLM_API_KEY": "sk-bench",
            "LLM_MODEL": "bench",
        }
    )
    processes: list[subprocess.Popen] = []
    try:
        manage = [PYTHON, "manage.py"]
        subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=600)
        demo = json.loads(
            subprocess.run(
                [*manage, "bootstrap_demo", "--json"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120
            ).stdout
        )
        processes.append(
            subprocess.Popen([PYTHON, "-m", "bench.llm_stub", "--port", str(stub_port)], cwd=ROOT, env=env)
        )
        gunicorn = subprocess.Popen(
            [str(Path(PYTHON).parent / "gunicorn"), "config.wsgi:application", "--config", "config/gunicorn.py"]
            + ["--bind", f"{HOST}:{web_port}"],
            cwd=ROOT,
            env=env,
        )
        processes.append(gunicorn)
        wait_http(f"http://{HOST}:{stub_port}/healthz")
        wait_http(f"http://{HOST}:{web_port}/healthz")
        path, key = f"/api/v1/channels/{demo['channelId']}/messages", demo["apiKey"]

        def backends() -> list[int]:
            with psycopg.connect(admin, autocommit=True) as db:
                rows = db.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [args.db]).fetchall()
            return [row[0] for row in rows]

        meter = CpuMeter(
            {
                "gunicorn": lambda: [child.pid for child in psutil.Process(gunicorn.pid).children(recursive=True)],
                "postgres": backends,
            }
        )
        token = secrets.token_hex(3)
        _conversation(web_port, path, key, f"warm-{token}@bench.example", TEXTS[:1], 0)  # the worker's first call
        single = _round(
            meter,
            stub_port,
            args.contacts,
            lambda n: _conversation(web_port, path, key, f"single-{token}-{n}@bench.example", TEXTS[:1], 0),
        )
        outcomes: list = []

        def burst(n: int, mode: str) -> None:
            answers = _conversation(
                web_port, path, key, f"{mode}-{token}-{n}@bench.example", TEXTS, args.apart_ms / 1000
            )
            outcomes.extend(answers)

        queued = _round(meter, stub_port, args.contacts, lambda n: burst(n, "queue"))
        outcomes.clear()
        subprocess.run(
            [*manage, "channel", "set", demo["channelId"], "--burst-mode", "latest"]
            + ["--burst-window-ms", str(args.window_ms)],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        bursts = _round(meter, stub_port, args.contacts, lambda n: burst(n, "latest"))
        ok = [body for status, body in outcomes if status == 200]
        per_message = single["cpu"].get("gunicornCpuMsPerRequest", 0) + single["cpu"].get("postgresCpuMsPerRequest", 0)
        per_queued = queued["cpu"].get("gunicornCpuMsPerRequest", 0) + queued["cpu"].get("postgresCpuMsPerRequest", 0)
        per_burst = bursts["cpu"].get("gunicornCpuMsPerRequest", 0) + bursts["cpu"].get("postgresCpuMsPerRequest", 0)
        results = {
            "contacts": args.contacts,
            "windowMs": args.window_ms,
            "apartMs": args.apart_ms,
            "single": {**single, "cpuMsPerMessage": round(per_message, 2)},
            "queueBurst": {**queued, "cpuMsPerBurst": round(per_queued, 2)},
            "burst": {
                **bursts,
                "cpuMsPerBurst": round(per_burst, 2),
                "agentCallsPerBurst": round(bursts["agentCalls"] / args.contacts, 2),
                "ok": len(ok),
                "superseded": sum("supersededBy" in body for body in ok),
                "answered": sum("supersededBy" not in body for body in ok),
            },
            "burstCpuOverMessageCpu": round(per_burst / per_message, 2) if per_message else None,
            "loadAverage": list(os.getloadavg()),
        }
        print(json.dumps(results, indent=2))
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
