"""`make run` once the database is there (README "Set-up"): migrate, the demo workspace, runserver; the demo's
curl lines are printed only once the server answers, so they work when pasted at once.

    python -m config.devrun --bind 127.0.0.1:8000

runserver runs in its own process group (its autoreloader has a child): SIGINT, SIGTERM and SIGHUP here are
passed to the whole group, and this process waits for it. Standard library only (Django runs in the children).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from config.localdb import BASE_DIR, _set_parent_death_signal

READY_SECONDS = 120


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(BASE_DIR / "manage.py"), *args]


def _probe_url(bind: str) -> str:
    host, _, port = bind.rpartition(":")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    return f"http://{host}:{port}/healthz"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # an answer, even an error: the server is up
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.devrun")
    parser.add_argument("--bind", required=True)
    args = parser.parse_args(argv)
    server: subprocess.Popen | None = None

    def stop(signum: int, frame: object) -> None:
        for other in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # once: the rest is waiting for it
            signal.signal(other, signal.SIG_IGN)
        if server is not None and server.poll() is None:
            try:
                os.killpg(server.pid, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
            except ProcessLookupError:
                pass
        raise SystemExit(128 + signum)

    _set_parent_death_signal(signal.SIGTERM)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    try:
        print("Migrating the database ...", flush=True)
        if subprocess.run(_manage("migrate", "--verbosity", "0")).returncode != 0:
            return 1
        demo = subprocess.run(_manage("bootstrap_demo", "--bind", args.bind), stdout=subprocess.PIPE, text=True)
        if demo.returncode != 0:
            return 1
        print(f"Starting the development server on {args.bind} ...", flush=True)
        server = subprocess.Popen(_manage("runserver", args.bind, "--verbosity", "0"), process_group=0)
        deadline = time.monotonic() + READY_SECONDS
        while not _answers(_probe_url(args.bind)):
            if server.poll() is not None:
                return server.returncode or 1
            if time.monotonic() > deadline:
                print(f"The server did not answer on {args.bind} within {READY_SECONDS} s.", flush=True)
                break
            time.sleep(0.2)
        else:
            print(f"\nServing on http://{args.bind} (Ctrl-C stops).\n{demo.stdout}", end="", flush=True)
        return server.wait()
    except SystemExit as exit:
        if server is not None:
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        return int(exit.code or 0)


if __name__ == "__main__":
    sys.exit(main())
