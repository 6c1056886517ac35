"""What the bench harness (bench/run.py) and its scenarios (bench/scenarios/) share: paths, processes,
the machine's description, percentiles and CPU time."""

import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
HOST = "127.0.0.1"
ANALYSIS_MARKER = "<!-- analysis: everything below this line is kept when the harness rewrites the file -->"

# Issue #17's goals, measured side by side in one run (bench/report.py renders them as one table). The
# counts that define a goal (16 and 500 in flight, 200 first messages against a 1 s agent, 50 workspaces) are
# the same in the quick run; only durations, rounds and sequential counts shrink there.
FULL = {
    "warmupSeconds": 5,
    "s1Seconds": 20,
    "s1Ramp": 4,
    "s1Rounds": 2,
    "s1Connections": 16,
    "inFlightHigh": 500,
    "inFlightSeconds": 40,  # at 500 a message waits seconds: a long load, so the drain is a small part of it
    "inFlightRamp": 15,  # only for its rate (scenario 1 counts CPU over the whole load and its drain)
    "burstMessages": 200,
    "burstAgentMs": 1000,
    "burstRounds": 3,
    "burstWarmup": 20,
    "wsCount": 50,
    "wsConnections": 200,
    "wsSeconds": 15,
    "wsRamp": 6,
    "wsRounds": 3,
    "profileRequests": 200,
    "s5AgentMs": 200,
    "s5Seconds": 30,
    # scenarios 2 and 3 (earlier issues' goals): only with --all or --only
    "s2Clients": 500,
    "s2AgentMs": 2000,
    "s2Seconds": 40,
    "s2MaxRequests": 20_000,
    "s3Requests": 200,
    "s3Warmup": 20,
    "s3Short": 10,
    "s3Long": 10_000,
    "s3ContactsSmall": 1_000,
    "s3ContactsLarge": 1_000_000,
}
QUICK = {
    **FULL,
    "warmupSeconds": 2,
    "s1Seconds": 8,
    "s1Ramp": 3,
    "s1Rounds": 1,
    "inFlightSeconds": 12,
    "inFlightRamp": 5,
    "burstRounds": 1,
    "burstWarmup": 10,
    "wsSeconds": 8,
    "wsRamp": 3,
    "wsRounds": 1,
    "profileRequests": 40,
    "s5Seconds": 5,
    "s2Clients": 100,
    "s2Seconds": 12,
    "s2MaxRequests": 2_000,
    "s3Requests": 20,
    "s3Warmup": 5,
    "s3Long": 1_000,
    "s3ContactsLarge": 20_000,
}

# Where a profile's samples go, by the code's file path (first match wins): bench/inproc.py's cProfile and
# the sampled profile under load (bench/pyspy.py) use the same areas.
AREAS = [
    ("PostgreSQL driver and wait (psycopg, psycopg_pool)", ("psycopg",)),
    ("Django ORM and SQL compiler (django/db)", ("django/db/",)),
    ("DRF (rest_framework)", ("rest_framework/",)),
    ("API key check (djangorestframework-api-key, hashlib)", ("rest_framework_api_key", "hashlib")),
    (
        "OpenAI SDK, httpx, pydantic (agent call incl. loopback wait)",
        ("openai/", "httpx", "httpcore", "pydantic", "h11", "anyio", "sniffio", "certifi"),
    ),
    ("gevent (hub, patched sockets, greenlet switches)", ("gevent/", "greenlet")),
    ("logging", ("logging/",)),
    ("json", ("json/",)),
    ("Redis client (rate limit)", ("redis/",)),
    ("Prometheus metrics (prometheus_client, django_prometheus)", ("prometheus",)),
    ("Django request, middleware, test client (django/ other)", ("django/",)),
    ("gunicorn", ("gunicorn/",)),
    (
        "the apps (api, billing, conversations, contacts, channels_app, config)",
        ("api/", "billing/", "conversations/", "contacts/", "channels_app/", "config/"),
    ),
    ("sockets, ssl, selectors", ("socket", "ssl", "selectors")),
]
OTHER_AREA = "other (builtins, stdlib)"


def area_of(filename: str) -> str:
    return next((name for name, needles in AREAS if any(n in filename for n in needles)), OTHER_AREA)


# (label, file substring, function name): frames whose cumulative (inclusive) share a profile reports
FUNCTIONS = [
    ("view: ChannelMessageCreateApi.post", "api/edge/views.py", "post"),
    ("auth: apikey_authenticate", "channels_app/authentication.py", "apikey_authenticate"),
    ("auth: key hash check (is_valid)", "rest_framework_api_key", "is_valid"),
    ("serializer: is_valid", "rest_framework/serializers.py", "is_valid"),
    ("idempotency: request_fingerprint", "api/flow/idempotency.py", "request_fingerprint"),
    ("pipeline: message_post", "api/flow/post.py", "message_post"),
    ("pipeline: _accept (phase 1)", "api/flow/messaging.py", "_accept"),
    ("pipeline: _history", "api/flow/messaging.py", "_history"),
    ("pipeline: agent reply (phase 2 call)", "conversations/agents/openai_agent.py", "reply"),
    ("pipeline: _record (phase 3)", "api/flow/messaging.py", "_record"),
    ("pipeline: connection_release", "config/db.py", "connection_release"),
    ("openai: _client_for", "conversations/agents/openai_agent.py", "_client_for"),
    ("logging: Logger.info", "logging/__init__.py", "info"),
    ("logging: Handler.handle", "logging/__init__.py", "handle"),
    ("db: psycopg Cursor.execute", "psycopg/cursor.py", "execute"),
    ("db: pool getconn", "psycopg_pool/pool.py", "getconn"),
    ("db: pool putconn", "psycopg_pool/pool.py", "putconn"),
    ("db: Django connection.close", "django/db/backends/base/base.py", "close"),
    ("db: Django ensure_connection", "django/db/backends/base/base.py", "ensure_connection"),
    ("django: WSGI/handler get_response", "django/core/handlers/base.py", "get_response"),
    ("json: dumps", "json/__init__.py", "dumps"),
    ("ids: ulid", "config/ids.py", "ulid"),
]


# --- processes ---------------------------------------------------------------------------------------------


class Processes:
    """Every process the harness starts, each in its own process group, stopped by its id at the end."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "w")  # closed with the process
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append((name, process))
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 15) -> None:
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)  # the group we created for it: it and its workers
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=5)

    def stop_all(self) -> None:
        for _, process in reversed(self.started):
            self.stop(process)


def run(argv: list[str], env: dict, *, timeout: float, log: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if log is not None:
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


# --- the machine --------------------------------------------------------------------------------------------


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> dict:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    busiest = []
    for proc in psutil.process_iter(["pid", "name", "cpu_percent"]):
        try:
            proc.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(1.0)
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            busiest.append((proc.cpu_percent(None), proc.info["name"]))
        except psutil.Error:
            pass
    busiest.sort(reverse=True)
    return {
        "nproc": os.cpu_count(),
        "memoryGiB": round(psutil.virtual_memory().total / 2**30, 1),
        "cpuModel": cpu_model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadAverageAtStart": loadavg(),
        "busiestProcessesAtStart": [f"{name} {pct:.0f}%" for pct, name in busiest[:6] if pct >= 1],
    }


def git_commit() -> str:
    """The checked-out commit, read from .git without running git."""
    try:
        git = ROOT / ".git"
        if git.is_file():  # a worktree: "gitdir: ..."
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head[:7]
        ref = head.split(":", 1)[1].strip()
        common = Path((git / "commondir").read_text().strip()) if (git / "commondir").exists() else None
        for base in filter(None, [git, (git / common) if common else None]):
            if (base / ref).exists():
                return (base / ref).read_text().strip()[:7]
            packed = base / "packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0][:7]
    except OSError:
        pass
    return "unknown"


# --- measurements -------------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


class CpuMeter:
    """CPU seconds used between start() and stop(): the whole machine, and groups of processes given by
    functions returning their pids (evaluated at both ends, so a process started in between counts whole);
    `counters`: more CPU seconds, each a function returning a running total (the workers' garbage collector)."""

    def __init__(self, groups: dict, counters: dict | None = None):
        self.groups = groups
        self.counters = counters or {}

    @staticmethod
    def _proc_cpu(pids) -> dict[int, float]:
        seconds = {}
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
                seconds[pid] = times.user + times.system
            except psutil.Error:
                pass
        return seconds

    def start(self) -> None:
        self.t0 = time.monotonic()
        total = psutil.cpu_times()
        self.busy0 = sum(total) - total.idle - getattr(total, "iowait", 0)
        self.before = {name: self._proc_cpu(pids()) for name, pids in self.groups.items()}
        self.counted = {name: read() for name, read in self.counters.items()}

    def stop(self, completed: int = 0) -> dict:
        elapsed = time.monotonic() - self.t0
        total = psutil.cpu_times()
        busy = sum(total) - total.idle - getattr(total, "iowait", 0) - self.busy0
        used = {}
        for name, pids in self.groups.items():
            before = self.before[name]
            after = self._proc_cpu(set(pids()) | set(before))
            used[name] = sum(after[pid] - before.get(pid, 0.0) for pid in after)
        result = {"seconds": round(elapsed, 2), "machineBusyCores": round(busy / elapsed, 2)}
        result.update({f"{name}CpuSeconds": round(seconds, 3) for name, seconds in used.items()})
        result.update({f"{name}Cores": round(seconds / elapsed, 2) for name, seconds in used.items()})
        result["everythingElseCores"] = round(max(0.0, busy - sum(used.values())) / elapsed, 2)
        counted = {name: read() - self.counted[name] for name, read in self.counters.items()}
        result.update({f"{name}Cores": round(seconds / elapsed, 3) for name, seconds in counted.items()})
        if completed:
            result.update(
                {
                    f"{name}CpuMsPerRequest": round(seconds / completed * 1000, 2)
                    for name, seconds in (used | counted).items()
                }
            )
        return result
