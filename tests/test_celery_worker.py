"""The README's worker command (`celery -A config worker --beat`), run for real: it logs JSON lines at INFO
like the web process, and beat keeps its schedule file under var/, not in the folder it was started from.

The broker is Celery's in-memory one (no REDIS_URL), so the worker needs nothing else. It starts in a fresh
temporary folder: the schedule file must still land in the project's var/. The worker is ours, stopped by
its pid.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings

DEADLINE_SECONDS = 60


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)


def test_worker_and_beat_log_json_lines_and_keep_the_schedule_under_var(tmp_path):
    base_dir = Path(settings.BASE_DIR)
    for old in (base_dir / "var").glob("celerybeat-schedule*"):
        old.unlink()  # this checkout's own state file, recreated by the worker below
    env = {**os.environ, "PYTHONPATH": str(base_dir), "LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}
    env.pop("REDIS_URL", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the worker's own default, config.settings.base
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--beat", "--pool", "solo", "--loglevel", "INFO"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,  # the start-up banner
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(process.stderr, lines), daemon=True).start()
    records: list[dict] = []
    raw: list[str] = []
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not any("ready" in record.get("event", "") for record in records):
            assert time.monotonic() < deadline and process.poll() is None, "".join(raw)
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            raw.append(line)
            records.append(json.loads(line))  # every line is JSON, or this fails
        # beat started too, through the same logging
        while not any(record.get("event", "").startswith("beat: Starting") for record in records):
            assert time.monotonic() < deadline and process.poll() is None, "".join(raw)
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            raw.append(line)
            records.append(json.loads(line))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)

    ready = next(record for record in records if "ready" in record.get("event", ""))
    assert ready["level"] == "info" and ready["logger"].startswith("celery")
    assert "timestamp" in ready
    # the schedule file: under the project's var/, never in the folder the worker was started in
    assert list(tmp_path.iterdir()) == []
    assert list((base_dir / "var").glob("celerybeat-schedule*"))
