"""`make bench`: the load harness, on loopback, against the production stack.

    make bench                      # full run: bench/results/*.json and bench/RESULTS.md
    BENCH_QUICK=1 make bench        # smoke test with small counts: bench/results/quick/
    .venv/bin/python -m bench.run [--quick] [--keep-db] [--only s1,s4]

What it does: creates its own PostgreSQL database (dropped at the end unless --keep-db), uses Redis db 8,
migrates, makes the data through the apps' services (bench/fixtures.py), starts the stand-in LLM
(bench/llm_stub.py) and gunicorn exactly as `make serve` does (config/gunicorn.py, gevent worker) with
the bench's settings (bench/settings.py: production's plus the bare view's URL), runs the scenarios and stops
every process it started, also on failure or Ctrl-C.

Every load is bounded in requests and in time. Traffic goes to 127.0.0.1 only.
"""

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from http.client import HTTPConnection
from pathlib import Path

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
HOST = "127.0.0.1"
ANALYSIS_MARKER = "<!-- analysis: everything below this line is kept when the harness rewrites the file -->"

FULL = {
    "warmupSeconds": 5,
    "s1Seconds": 20,
    "s1Ramp": 4,
    "s1Rounds": 2,
    "s1Connections": 16,
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
    "s5AgentMs": 200,
    "s5Seconds": 30,
    "profileRequests": 300,
}
QUICK = {
    "warmupSeconds": 2,
    "s1Seconds": 8,
    "s1Ramp": 3,
    "s1Rounds": 1,
    "s1Connections": 8,
    "s2Clients": 100,
    "s2AgentMs": 2000,
    "s2Seconds": 12,
    "s2MaxRequests": 2_000,
    "s3Requests": 20,
    "s3Warmup": 5,
    "s3Short": 10,
    "s3Long": 1_000,
    "s3ContactsSmall": 1_000,
    "s3ContactsLarge": 20_000,
    "s5AgentMs": 200,
    "s5Seconds": 5,
    "profileRequests": 40,
}


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
    functions returning their pids (evaluated at both ends, so a process started in between counts whole)."""

    def __init__(self, groups: dict):
        self.groups = groups

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

    def stop(self, completed: int = 0) -> dict:
        elapsed = time.monotonic() - self.t0
        total = psutil.cpu_times()
        busy = sum(total) - total.idle - getattr(total, "iowait", 0) - self.busy0
        used = {}
        for name, pids in self.groups.items():
            before = self.before[name]
            after = self._proc_cpu(set(pids()) | set(before))
            used[name] = sum(after[pid] - before.get(pid, 0.0) for pid in after)
        result = {"machineBusyCores": round(busy / elapsed, 2)}
        result.update({f"{name}Cores": round(seconds / elapsed, 2) for name, seconds in used.items()})
        result["everythingElseCores"] = round(max(0.0, busy - sum(used.values())) / elapsed, 2)
        if completed:
            result.update(
                {f"{name}CpuMsPerRequest": round(seconds / completed * 1000, 2) for name, seconds in used.items()}
            )
        return result


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.quick = args.quick
        self.cfg = dict(QUICK if args.quick else FULL)
        self.only = set(args.only.split(",")) if args.only else None
        self.keep_db = args.keep_db
        self.out = BENCH / "results" / "quick" if self.quick else BENCH / "results"
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.db_name = args.db or ("channels_bench_quick" if self.quick else "channels_bench")
        self.admin_url = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        admin = psycopg.conninfo.conninfo_to_dict(self.admin_url)
        self.database_url = (
            f"postgres://{admin.get('user', 'postgres')}"
            f"{':' + str(admin['password']) if admin.get('password') else ''}"
            f"@{admin.get('host', HOST)}:{admin.get('port', 5432)}/{self.db_name}"
        )
        self.redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
        self.procs = Processes(self.logs)
        # BENCH_GENERATOR=python forces the fallback generator (to test it where wrk is installed)
        self.wrk = shutil.which("wrk") if os.environ.get("BENCH_GENERATOR", "wrk") == "wrk" else None
        self.results: dict[str, dict] = {}
        self.started_at = datetime.now(UTC)
        self.token = format(int(time.time() * 10) % 36**6, "x")  # keeps contacts and keys unique per run
        self.command = "BENCH_QUICK=1 make bench" if self.quick else "make bench"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "DJANGO_"))}
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "DJANGO_SETTINGS_MODULE": "bench.settings",
                "PYTHONUNBUFFERED": "1",
            }
        )
        # config/gunicorn.py refuses the development key with DEBUG off: a throwaway key for this run.
        env.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
        self.env = env

    def want(self, name: str) -> bool:
        return self.only is None or name in self.only

    # --- set-up -------------------------------------------------------------------------------------------

    def setup(self) -> None:
        self.info = machine()
        self.info["commit"] = git_commit()
        print(
            f"bench: {'quick' if self.quick else 'full'} run, load average {self.info['loadAverageAtStart']}, "
            f"commit {self.info['commit']}, database {self.db_name}",
            flush=True,
        )
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{self.db_name}"')
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()
        run([PYTHON, "manage.py", "migrate", "--verbosity", "0"], self.env, timeout=300, log=self.logs / "migrate.log")
        self.stub_port, self.web_port = free_port(), free_port()
        self.stub_url = f"http://{HOST}:{self.stub_port}"
        self.web_url = f"http://{HOST}:{self.web_port}"
        self.stub = self.procs.start(
            "llm_stub", [PYTHON, "-m", "bench.llm_stub", "--port", str(self.stub_port)], self.env
        )
        wait_http(f"{self.stub_url}/healthz")
        self.fixtures_path = self.out / ".fixtures.json"
        agent_ms = f"0,{self.cfg['s5AgentMs']},{self.cfg['s2AgentMs']}"
        run(
            [
                PYTHON,
                "-m",
                "bench.fixtures",
                "base",
                "--stub",
                self.stub_url,
                "--agent-ms",
                agent_ms,
                "--out",
                str(self.fixtures_path),
            ],
            self.env,
            timeout=300,
            log=self.logs / "fixtures.log",
        )
        self.fixtures = json.loads(self.fixtures_path.read_text())
        # `make serve` without its migrate step (done above) and its sync: the same gunicorn command line.
        self.web = self.procs.start(
            "gunicorn",
            [
                str(Path(PYTHON).parent / "gunicorn"),
                "config.wsgi:application",
                "--config",
                "config/gunicorn.py",
                "--bind",
                f"{HOST}:{self.web_port}",
            ],
            self.env,
        )
        wait_http(f"{self.web_url}/healthz")
        self.workers = self._workers()
        status, body, _ = self.post(self.fixtures["channels"]["0"], "smoke@bench.example")
        if status != 200:
            raise RuntimeError(f"smoke message failed: {status} {body[:300]!r}")
        self.prime()
        print(f"bench: gunicorn {self.web_url} (workers {self.workers}), stub {self.stub_url}", flush=True)

    def prime(self) -> None:
        """Concurrent messages until every worker has answered a few: a worker imports the OpenAI SDK and
        builds its client on its first message (seconds on a busy machine), which no scenario should time."""

        def client(n: int) -> None:
            conn = HTTPConnection(HOST, self.web_port, timeout=120)
            try:
                for i in range(3):
                    self.post(self.fixtures["channels"]["0"], f"{self.token}prime-{n}-{i}@bench.example", conn=conn)
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4 * len(self.workers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)

    def pg_backends(self) -> list[int]:
        """The PostgreSQL backends serving the benchmark's database (the server's pools, mostly)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.db_name]
                ).fetchall()
            ]

    def _workers(self) -> list[int]:
        deadline = time.monotonic() + 30
        expected = int(self.env.get("WEB_CONCURRENCY", os.cpu_count() or 1))
        while time.monotonic() < deadline:
            children = psutil.Process(self.web.pid).children(recursive=True)
            if len(children) >= expected:
                return sorted(child.pid for child in children)
            time.sleep(0.2)
        raise RuntimeError("gunicorn workers did not start")

    def post(
        self,
        channel: str,
        identifier: str,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        conn: HTTPConnection | None = None,
    ) -> tuple[int, bytes, float]:
        """One message, sequentially, over `conn` (keep-alive) or a new connection."""
        body = json.dumps(
            {
                "type": "TEXT",
                "contactIdentifier": identifier,
                "contactName": "Bench",
                "content": {"text": {"body": "Hello! How long does shipping take to Lisbon?"}},
            }
        )
        headers = {"Content-Type": "application/json", "X-API-Key": key or self.fixtures["apiKey"]}
        if idempotency_key:
            headers["X-Idempotency-Key"] = idempotency_key
        own = conn is None
        conn = conn or HTTPConnection(HOST, self.web_port, timeout=60)
        started = time.perf_counter()
        conn.request("POST", f"/api/v1/channels/{channel}/messages", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - started
        if own:
            conn.close()
        return response.status, data, elapsed

    # --- load generators ----------------------------------------------------------------------------------

    def wrk_run(
        self,
        *,
        path: str,
        connections: int,
        seconds: float,
        prefix: str,
        max_per_thread: int,
        key: str = "",
        timeout: float = 10,
    ) -> dict:
        assert self.wrk is not None  # the caller falls back to bench.loadgen without wrk
        argv = [
            self.wrk,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            f"--timeout={int(timeout)}s",
            "-s",
            str(BENCH / "wrk_messages.lua"),
            self.web_url,
            "--",
            path,
            key or self.fixtures["apiKey"],
            prefix,
            str(max_per_thread),
            "1",
        ]
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=seconds + timeout + 30)
        line = next((ln for ln in result.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
        if result.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed: {result.stdout[-2000:]} {result.stderr[-2000:]}")
        data = json.loads(line[len("WRKJSON ") :])
        ok = data["statuses"].get("200", 0)
        seconds_run = data["durationUs"] / 1e6
        errors = data["non2xx"] + sum(data["errors"][k] for k in ("connect", "read", "write", "timeout"))
        return {
            "generator": "wrk",
            "connections": connections,
            "seconds": round(seconds_run, 2),
            "requests": data["requests"],
            "ok": ok,
            "errors": errors,
            "statuses": data["statuses"],
            "socketErrors": data["errors"],
            "rate": round(ok / seconds_run, 2),
            "latencyMs": {k: round(v / 1000, 2) for k, v in data["latencyUs"].items()},
            "boundedBy": f"{seconds} s and {max_per_thread} responses",
        }

    def loadgen(
        self,
        mode: str,
        *,
        channel: str = "",
        path: str = "",
        seconds: float,
        prefix: str,
        rate: float = 0,
        clients: int = 0,
        max_requests: int,
        key: str = "",
        timeout: float = 30,
    ) -> dict:
        out = self.logs / f"loadgen-{prefix}.json"
        argv = [
            PYTHON,
            "-m",
            "bench.loadgen",
            mode,
            "--url",
            self.web_url,
            "--key",
            key or self.fixtures["apiKey"],
            "--prefix",
            prefix,
            "--duration",
            str(seconds),
            "--max-requests",
            str(max_requests),
            "--timeout",
            str(timeout),
            "--out",
            str(out),
        ]
        argv += ["--channel", channel] if channel else ["--path", path]
        argv += ["--rate", str(rate)] if mode == "open" else ["--clients", str(clients)]
        process = subprocess.run(
            argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=seconds + timeout + 60
        )
        if process.returncode != 0:
            raise RuntimeError(f"loadgen failed: {process.stderr[-3000:]}")
        data = json.loads(out.read_text())
        data["generator"] = f"bench.loadgen {mode}"
        return data

    def closed_load(
        self,
        *,
        path: str,
        connections: int,
        seconds: float,
        prefix: str,
        max_requests: int,
        timeout: float = 10,
        key: str = "",
    ) -> dict:
        if self.wrk:
            return self.wrk_run(
                path=path,
                connections=connections,
                seconds=seconds,
                prefix=prefix,
                max_per_thread=max_requests,
                timeout=timeout,
                key=key,
            )
        data = self.loadgen(
            "closed",
            path=path,
            seconds=seconds,
            prefix=prefix,
            clients=connections,
            max_requests=max_requests,
            timeout=timeout,
            key=key,
        )
        latencies = [s[2] * 1000 for s in data["samples"] if 200 <= s[3] < 300]
        data["latencyMs"] = {
            "mean": round(statistics.fmean(latencies), 2) if latencies else None,
            "p50": round(percentile(latencies, 50), 2),
            "p99": round(percentile(latencies, 99), 2),
        }
        data.pop("samples")
        data["connections"] = connections
        return data

    def inproc(self, command: str, out: Path, *extra: str, timeout: float = 900) -> dict:
        run(
            [PYTHON, "-m", "bench.inproc", command, "--fixtures", str(self.fixtures_path), "--out", str(out), *extra],
            self.env,
            timeout=timeout,
            log=self.logs / f"inproc-{command}.log",
        )
        return json.loads(out.read_text())

    def messages_path(self, channel: str) -> str:
        return f"/api/v1/channels/{channel}/messages"

    def save(self, name: str, data: dict) -> None:
        self.results[name] = data
        (self.out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
        print(f"bench: {name}: {json.dumps(data.get('summary', {}))}", flush=True)

    # --- scenarios ----------------------------------------------------------------------------------------

    def s1_ceiling(self) -> None:
        cfg, load_before = self.cfg, loadavg()
        channels = {
            "messages": self.fixtures["channels"]["0"],
            # not part of the ratio: the built-in agent instead of the OpenAI SDK, to show the SDK's share
            "messagesBuiltinAgent": self.fixtures["builtinChannel"],
        }
        paths = {"bare": "/api/bench/bare", **{label: self.messages_path(ch) for label, ch in channels.items()}}
        bound = 200_000  # responses per wrk thread: far above what a 2-core box answers in the duration
        for label, path in paths.items():  # warm every path
            self.closed_load(
                path=path,
                connections=cfg["s1Connections"],
                seconds=cfg["warmupSeconds"],
                prefix=f"{self.token}s1w-{label}",
                max_requests=bound,
            )
            self.drain(timeout=120)
        rounds: dict[str, list[dict]] = {label: [] for label in paths}
        meter = CpuMeter(
            {
                "gunicorn": lambda: [self.web.pid, *self.workers],
                "stub": lambda: [self.stub.pid],
                "postgres": self.pg_backends,
            }
        )
        cpu: dict[str, list[dict]] = {label: [] for label in paths}
        ramp = cfg["s1Ramp"]
        for n in range(cfg["s1Rounds"]):  # alternate, so a change in the machine's other load hits all
            for label, path in paths.items():
                meter.start()
                t0 = time.time()
                load = self.closed_load(
                    path=path,
                    connections=cfg["s1Connections"],
                    seconds=cfg["s1Seconds"],
                    prefix=f"{self.token}s1-{label}-{n}",
                    max_requests=bound,
                )
                t1 = time.time()
                if label in channels:
                    # Counted by the server: replies stored in the window after the ramp. The generator counts
                    # only requests that both start and end inside its run, which under-counts when a message
                    # takes seconds on a busy machine. Then drain, so CPU per request covers whole requests.
                    load["drainSeconds"] = self.drain(timeout=120)
                    done = self.replies(channels[label], since=t0)
                    load["generatorRate"] = load["rate"]
                    load["rate"] = round(sum(1 for t in done if t0 + ramp <= t < t1) / (t1 - t0 - ramp), 2)
                    load["serverCountedWindow"] = [ramp, round(t1 - t0, 1)]
                    completed = len(done)
                else:
                    completed = load["ok"]
                rounds[label].append(load)
                cpu[label].append(meter.stop(completed=completed))
        rate = {label: statistics.fmean(r["rate"] for r in runs) for label, runs in rounds.items()}
        errors = {label: sum(r["errors"] for r in runs) for label, runs in rounds.items()}
        ratio = rate["messages"] / rate["bare"] if rate["bare"] else 0.0

        def cpu_ms(label: str) -> float:  # gunicorn + PostgreSQL CPU per answered request, over the rounds
            return statistics.fmean(
                c.get("gunicornCpuMsPerRequest", 0) + c.get("postgresCpuMsPerRequest", 0) for c in cpu[label]
            )

        cost = {label: round(cpu_ms(label), 2) for label in paths}
        self.s1_rate, self.s1_done = rate["messages"], True
        self.save(
            "s1_ceiling",
            {
                "summary": {
                    "messagesPerSecond": round(rate["messages"], 1),
                    "barePerSecond": round(rate["bare"], 1),
                    "ratio": round(ratio, 3),
                    "goal": ">= 0.5",
                    "met": ratio >= 0.5,
                    "errors": errors,
                    "builtinAgentPerSecond": round(rate["messagesBuiltinAgent"], 1),
                    "cpuMsPerRequest": cost,
                    "cpuCostRatio": round(cost["bare"] / cost["messages"], 3) if cost["messages"] else None,
                },
                "agentLatencyMs": 0,
                "connections": cfg["s1Connections"],
                "secondsPerRun": cfg["s1Seconds"],
                "rounds": rounds,
                "cpu": cpu,
                "loadAverage": {"before": load_before, "after": loadavg()},
                "requestShape": "POST, new contactIdentifier and X-Idempotency-Key per request, 0 ms agent "
                "(OpenAI-compatible stub); the bare view gets the same POST; the bench workspaces' "
                "rate limit is raised out of the way, the limiter still runs",
                "method": f"closed loop; the bare view's rate counted by the generator, the messages' by the server "
                f"(replies stored from {ramp} s after the start to the end of each run)",
            },
        )

    def replies(self, channel: str, *, since: float) -> list[float]:
        """When each reply of the channel's conversations was stored (epoch seconds), from `since` on."""
        with psycopg.connect(self.database_url) as conn:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT extract(epoch FROM m.created_at)::float8 FROM conversations_message m "
                    "JOIN conversations_conversation c ON c.id = m.conversation_id WHERE c.channel_id = %s "
                    "AND m.direction = 'OUTBOUND' AND m.part = 1 AND m.created_at >= to_timestamp(%s)",
                    [channel, since],
                ).fetchall()
            ]

    def s5_added_latency(self) -> None:
        cfg, load_before = self.cfg, loadavg()
        rate = max(1.0, round(self.s1_rate / 2, 1))
        agent_s = cfg["s5AgentMs"] / 1000
        channel = self.fixtures["channels"][str(cfg["s5AgentMs"])]
        self.loadgen(
            "open", channel=channel, seconds=2, prefix=f"{self.token}s5w", rate=rate, max_requests=int(rate * 2) + 1
        )
        data = self.loadgen(
            "open",
            channel=channel,
            seconds=cfg["s5Seconds"],
            prefix=f"{self.token}s5",
            rate=rate,
            max_requests=int(rate * cfg["s5Seconds"]) + 1,
        )
        ok = [s for s in data["samples"] if 200 <= s[3] < 300]
        total = [s[1] * 1000 for s in ok]
        added = [(s[1] - agent_s) * 1000 for s in ok]
        added_service = [(s[2] - agent_s) * 1000 for s in ok]
        p50, p99 = percentile(added, 50), percentile(added, 99)
        self.save(
            "s5_added_latency",
            {
                "summary": {
                    "rate": rate,
                    "agentLatencyMs": cfg["s5AgentMs"],
                    "addedP50Ms": round(p50, 1),
                    "addedP99Ms": round(p99, 1),
                    "goal": "p99 < 50 ms",
                    "met": p99 < 50,
                    "errors": data["errors"],
                },
                "openLoop": True,
                "seconds": cfg["s5Seconds"],
                "requests": data["requests"],
                "ok": data["ok"],
                "statuses": data["statuses"],
                "achievedRate": data["rate"],
                "totalLatencyMs": {p: round(percentile(total, float(p)), 1) for p in ("50", "90", "99", "100")},
                "addedLatencyMs": {p: round(percentile(added, float(p)), 1) for p in ("50", "90", "99", "100")},
                "addedServiceTimeMs": {p: round(percentile(added_service, float(p)), 1) for p in ("50", "90", "99")},
                "method": "open loop at half of scenario 1's rate; latency counted from each request's scheduled "
                "start (no coordinated omission) minus the stub's fixed latency; 'service time' counts from "
                "the actual send",
                "loadAverage": {"before": load_before, "after": loadavg()},
            },
        )

    def s2_slow_agent(self) -> None:
        cfg, load_before = self.cfg, loadavg()
        agent_s = cfg["s2AgentMs"] / 1000
        channel = self.fixtures["channels"][str(cfg["s2AgentMs"])]
        time.sleep(1)
        idle_rss = {pid: psutil.Process(pid).memory_info().rss for pid in self.workers}
        samples: list[dict] = []
        stop = threading.Event()
        sampler = threading.Thread(target=self._sample_s2, args=(samples, stop), daemon=True)
        sampler.start()
        t0 = time.time()
        try:
            load = self.closed_load(
                path=self.messages_path(channel),
                connections=cfg["s2Clients"],
                seconds=cfg["s2Seconds"],
                prefix=f"{self.token}s2",
                max_requests=cfg["s2MaxRequests"],
                timeout=60.0,
            )  # an integrator's patience, not wrk's 2 s default
        finally:
            t_end = time.time()
            stop.set()
            sampler.join(timeout=10)
        drained = self.drain(timeout=180)
        ramp = agent_s + 3.0  # the first replies arrive after one agent latency; then a few seconds to settle
        window = (t0 + ramp, t0 + cfg["s2Seconds"] - 0.5)
        completed = self.replies(channel, since=t0)
        in_window = sum(1 for t in completed if window[0] <= t < window[1])
        steady = in_window / (window[1] - window[0])
        target = max(0.1, min(cfg["s2Clients"] / agent_s, self.s1_rate))  # 0.1: scenario 1 may have failed
        steady_samples = [s for s in samples if window[0] <= s["t"] < window[1]] or samples
        per_worker_max = {
            str(pid): max((s["workers"][pid]["dbConnections"] for s in samples if pid in s["workers"]), default=0)
            for pid in self.workers
        }
        per_worker_pg = {
            str(pid): max((s["workers"][pid]["dbConnectionsInPg"] for s in samples if pid in s["workers"]), default=0)
            for pid in self.workers
        }
        total_pg_max = max((s["pgConnections"] for s in samples), default=0)
        rss_load = statistics.median(sum(w["rss"] for w in s["workers"].values()) for s in steady_samples)
        rss_idle = sum(idle_rss.values())
        latency_mean_s = (load["latencyMs"]["mean"] or 0) / 1000
        # Closed loop: each client always has one request out (it sends the next as soon as it has an answer),
        # so the server holds as many requests as there are clients; Little's law is a cross-check.
        in_flight = cfg["s2Clients"]
        in_flight_little = round(steady * latency_mean_s, 1)
        mem_per = (rss_load - rss_idle) / in_flight
        ratio = steady / target
        max_conn = max([*per_worker_max.values(), *per_worker_pg.values()], default=0)
        self.save(
            "s2_slow_agent",
            {
                "summary": {
                    "clients": cfg["s2Clients"],
                    "agentLatencyMs": cfg["s2AgentMs"],
                    "throughput": round(steady, 1),
                    "target": round(target, 1),
                    "ratio": round(ratio, 3),
                    "goal": "ratio >= 0.9, 0 errors, <= 20 DB connections per process",
                    "errors": load["errors"],
                    "maxDbConnectionsPerProcess": max_conn,
                    "memoryPerInFlightKiB": round(mem_per / 1024, 1),
                    "met": ratio >= 0.9 and load["errors"] == 0 and max_conn <= 20,
                },
                "load": load,
                "steadyWindowSeconds": [round(window[0] - t0, 1), round(window[1] - t0, 1)],
                "repliesInWindow": in_window,
                "loadSecondsTotal": round(t_end - t0, 1),
                "drainSeconds": drained,
                "dbConnections": {
                    "perWorkerMaxSocket": per_worker_max,
                    "perWorkerMaxMatchedInPgStatActivity": per_worker_pg,
                    "databaseTotalMax": total_pg_max,
                    "method": "every 0.5 s: (a) each gunicorn worker's established TCP sockets to "
                    "PostgreSQL's port, from /proc via psutil; (b) the same sockets' local "
                    "ports matched against pg_stat_activity.client_port of the benchmark "
                    "database; (c) count(*) of pg_stat_activity for the database (without "
                    "the sampler's own session)",
                },
                "memory": {
                    "idleRssMiB": round(rss_idle / 2**20, 1),
                    "loadRssMedianMiB": round(rss_load / 2**20, 1),
                    "loadRssMaxMiB": round(
                        max(sum(w["rss"] for w in s["workers"].values()) for s in samples) / 2**20, 1
                    )
                    if samples
                    else None,
                    "inFlight": in_flight,
                    "inFlightLittlesLaw": in_flight_little,
                    "method": "sum of the workers' RSS: median over the steady window minus the value just "
                    "before the load, divided by the requests in flight (the clients of the closed "
                    "loop; Little's law, steady throughput x mean latency of the answered ones, as a "
                    "cross-check)",
                },
                "samples": [
                    {
                        "t": round(s["t"] - t0, 1),
                        "pg": s["pgConnections"],
                        "workers": {
                            str(pid): [w["dbConnections"], w["dbConnectionsInPg"], round(w["rss"] / 2**20, 1)]
                            for pid, w in s["workers"].items()
                        },
                    }
                    for s in samples
                ],
                "loadAverage": {"before": load_before, "after": loadavg()},
            },
        )

    def drain(self, timeout: float) -> float | None:
        """Wait until the server has answered every message it accepted (the generator hangs up at its
        deadline; the server still finishes what it took), so the next scenario starts on a quiet server."""
        started = time.monotonic()
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while time.monotonic() - started < timeout:
                # a message whose request died (e.g. a pool timeout in its record phase) stays PENDING until
                # its lease runs out; nobody works on it, so it does not count
                [(pending,)] = conn.execute(  # count(*) is always one row
                    "SELECT count(*) FROM conversations_message WHERE direction = 'INBOUND' "
                    "AND status = 'PENDING' AND lease_until > now()"
                ).fetchall()
                if not pending:
                    return round(time.monotonic() - started, 1)
                time.sleep(1)
        return None

    def _sample_s2(self, samples: list[dict], stop: threading.Event) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not stop.is_set():
                rows = conn.execute(
                    "SELECT client_port FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    [self.db_name],
                ).fetchall()
                pg_ports = {row[0] for row in rows}
                workers = {}
                for pid in self.workers:
                    try:
                        proc = psutil.Process(pid)
                        sockets = [
                            c
                            for c in proc.net_connections(kind="tcp")
                            if c.raddr and c.raddr.port == 5432 and c.status == psutil.CONN_ESTABLISHED
                        ]
                        workers[pid] = {
                            "dbConnections": len(sockets),
                            "dbConnectionsInPg": sum(1 for c in sockets if c.laddr.port in pg_ports),
                            "rss": proc.memory_info().rss,
                        }
                    except psutil.Error:
                        pass
                samples.append({"t": time.time(), "pgConnections": len(rows), "workers": workers})
                stop.wait(0.5)

    def s3_flat_cost(self) -> None:
        cfg, load_before = self.cfg, loadavg()
        started = time.monotonic()
        run(
            [
                PYTHON,
                "-m",
                "bench.fixtures",
                "flat",
                "--in",
                str(self.fixtures_path),
                "--out",
                str(self.fixtures_path),
                "--short",
                str(cfg["s3Short"]),
                "--long",
                str(cfg["s3Long"]),
                "--contacts-small",
                str(cfg["s3ContactsSmall"]),
                "--contacts-large",
                str(cfg["s3ContactsLarge"]),
            ],
            self.env,
            timeout=1800,
            log=self.logs / "fixtures-flat.log",
        )
        self.fixtures = json.loads(self.fixtures_path.read_text())
        flat = self.fixtures["flat"]
        fill_seconds = round(time.monotonic() - started, 1)
        n, warm = cfg["s3Requests"], cfg["s3Warmup"]
        conns: dict[str, HTTPConnection] = {}

        def timed(label: str, channel: str, identifier: str, key: str | None, idem: str) -> float:
            conn = conns.setdefault(label, HTTPConnection(HOST, self.web_port, timeout=60))
            try:
                status, body, seconds = self.post(channel, identifier, key=key, idempotency_key=idem, conn=conn)
            except (OSError, ConnectionError):  # the server closed an idle keep-alive connection: once more
                conns[label] = conn = HTTPConnection(HOST, self.web_port, timeout=60)
                status, body, seconds = self.post(channel, identifier, key=key, idempotency_key=idem, conn=conn)
            if status != 200:
                raise RuntimeError(f"scenario 3 {label}: {status} {body[:300]!r}")
            return seconds

        # the same conversation, at position `short` and `long`, interleaved
        channel = flat["channelId"]
        conv = flat["conversations"]
        position: dict[str, list[float]] = {"short": [], "long": []}
        for i in range(warm + n):
            for label in ("short", "long"):
                seconds = timed(label, channel, conv[label]["contactIdentifier"], None, f"s3c-{label}-{i}")
                if i >= warm:
                    position[label].append(seconds * 1000)
        # contact resolution: an existing contact (random, each once) and a new one, 1,000 vs 1,000,000 contacts
        import random

        rng = random.Random(3)
        sets = flat["contactSets"]
        picks = {
            label: rng.sample(range(1, sets[label]["contacts"] + 1), min(warm + n, sets[label]["contacts"]))
            for label in ("small", "large")
        }
        existing: dict[str, list[float]] = {"small": [], "large": []}
        new: dict[str, list[float]] = {"small": [], "large": []}
        for i in range(warm + n):
            for label in ("small", "large"):
                s = sets[label]
                seconds = timed(
                    f"c-{label}", s["channelId"], f"c{picks[label][i]}@bench.example", s["apiKey"], f"s3e-{label}-{i}"
                )
                if i >= warm:
                    existing[label].append(seconds * 1000)
                seconds = timed(
                    f"c-{label}", s["channelId"], f"s3new-{label}-{i}@bench.example", s["apiKey"], f"s3n-{label}-{i}"
                )
                if i >= warm:
                    new[label].append(seconds * 1000)
        for conn in conns.values():
            conn.close()
        isolated = self.inproc("flatsql", self.out / ".flatsql.json", "--requests", str(n), "--warmup", str(warm))

        def pair(samples: dict[str, list[float]], a: str, b: str) -> dict:
            ma, mb = statistics.median(samples[a]), statistics.median(samples[b])
            return {
                f"{a}MedianMs": round(ma, 2),
                f"{b}MedianMs": round(mb, 2),
                "ratio": round(mb / ma, 3),
                f"{a}P90Ms": round(percentile(samples[a], 90), 2),
                f"{b}P90Ms": round(percentile(samples[b], 90), 2),
                "samples": len(samples[a]),
            }

        conversation = pair(position, "short", "long")
        contacts_existing = pair(existing, "small", "large")
        contacts_new = pair(new, "small", "large")
        ratios = [conversation["ratio"], contacts_existing["ratio"], contacts_new["ratio"]]
        self.save(
            "s3_flat_cost",
            {
                "summary": {
                    "conversationPositionRatio": conversation["ratio"],
                    "contactExistingRatio": contacts_existing["ratio"],
                    "contactNewRatio": contacts_new["ratio"],
                    "goal": "each ratio <= 1.1",
                    "met": all(r <= 1.1 for r in ratios),
                },
                "conversation": {
                    **conversation,
                    "positions": {
                        "short": [cfg["s3Short"], cfg["s3Short"] + 2 * (warm + n) - 2],
                        "long": [cfg["s3Long"], cfg["s3Long"] + 2 * (warm + n) - 2],
                    },
                    "note": "each request adds the message and its reply, so the position moves by 2 per request",
                },
                "contactsExisting": {
                    **contacts_existing,
                    "contacts": [cfg["s3ContactsSmall"], cfg["s3ContactsLarge"]],
                    "note": "a random existing contact per request (each once): lookup hit plus a new conversation",
                },
                "contactsNew": {**contacts_new, "note": "a new contact per request: lookup miss plus insert"},
                "isolatedQueries": isolated,
                "method": f"sequential requests over one keep-alive connection each, the two sides interleaved, "
                f"{warm} warm-up rounds, medians of {n}; 0 ms agent",
                "fillSeconds": fill_seconds,
                "fixtureTimings": flat["timings"],
                "loadAverage": {"before": load_before, "after": loadavg()},
            },
        )

    def s4_queries(self) -> None:
        data = self.inproc("queries", self.out / ".queries.json")
        goals = data["goals"]
        summary = {}
        for agent in ("openai", "builtin"):
            for case in (
                "newContact",
                "existingContact",
                "idempotentReplay",
                "newContactWithKey",
                "existingContactWithKey",
            ):
                summary[f"{agent}.{case}"] = data[agent][case]["count"]
        met = all(data[a][c]["count"] <= goals[c] for a in ("openai", "builtin") for c in goals)
        summary["goal"] = "new <= 10, existing <= 10, replay <= 3"
        summary["met"] = met
        self.save("s4_queries", {"summary": summary, **data})

    def profile(self) -> None:
        data = self.inproc("profile", self.out / ".profile.json", "--requests", str(self.cfg["profileRequests"]))
        data["summary"] = {"wallMsPerRequest": data["wallMsPerRequest"], "cpuMsPerRequest": data["cpuMsPerRequest"]}
        self.save("profile", data)

    # --- the report ---------------------------------------------------------------------------------------

    def report(self, error: str | None = None) -> None:
        self.info["loadAverageAtEnd"] = loadavg()
        run_info = {
            "command": self.command,
            "startedAt": self.started_at.isoformat(timespec="seconds"),
            "finishedAt": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": self.info,
            "config": self.cfg,
            "generator": "wrk" if self.wrk else "bench.loadgen (wrk not found)",
            "error": error,
        }
        (self.out / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
        self.write_markdown(run_info, self.results)

    def render_only(self) -> int:
        """Rewrite RESULTS.md from the last run's JSON files (after a change of this file's markdown)."""
        info = json.loads((self.out / "run.json").read_text())
        names = ("s1_ceiling", "s2_slow_agent", "s3_flat_cost", "s4_queries", "s5_added_latency", "profile")
        results = {
            name: json.loads((self.out / f"{name}.json").read_text())
            for name in names
            if (self.out / f"{name}.json").exists()
        }
        self.write_markdown(info, results)
        return 0

    def write_markdown(self, run_info: dict, results: dict) -> None:
        target = self.out / "RESULTS.md" if self.quick else BENCH / "RESULTS.md"
        kept = ""
        if target.exists():
            text = target.read_text()
            if ANALYSIS_MARKER in text:
                kept = text.split(ANALYSIS_MARKER, 1)[1]
        target.write_text(render_markdown(run_info, results) + "\n" + ANALYSIS_MARKER + kept)
        print(f"bench: wrote {target.relative_to(ROOT)}", flush=True)

    def teardown(self) -> None:
        self.procs.stop_all()
        if not self.keep_db:
            try:
                with psycopg.connect(self.admin_url, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            except psycopg.Error as exc:
                print(f"bench: could not drop {self.db_name}: {exc}", file=sys.stderr)

    def main(self) -> int:
        error = None
        try:
            self.setup()
            self.s1_rate, self.s1_done = 0.0, False
            steps = [
                ("s4", self.s4_queries),
                ("s1", self.s1_ceiling),
                ("s5", self.s5_added_latency),
                ("s2", self.s2_slow_agent),
                ("s3", self.s3_flat_cost),
                ("profile", self.profile),
            ]
            for name, step in steps:
                if name in ("s5", "s2") and not self.s1_done and self.want(name):
                    self.s1_ceiling()  # both need scenario 1's rate of this run
                if self.want(name):
                    print(f"bench: {name} ... (load average {loadavg()})", flush=True)
                    step()
        except BaseException as exc:  # KeyboardInterrupt too: report what ran, then stop everything
            error = f"{type(exc).__name__}: {exc}"
            print(f"bench: FAILED: {error}", file=sys.stderr, flush=True)
        finally:
            self.teardown()
        if self.results or error is None:
            self.report(error)
        return 1 if error else 0


# --- markdown -----------------------------------------------------------------------------------------------


def _met(value: bool | None) -> str:
    return "met" if value else "**not met**"


def render_markdown(info: dict, results: dict) -> str:
    m = info["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Latest run: `{info['command']}` at {info['startedAt']} (finished {info['finishedAt']}), "
        f"commit `{m['commit']}`.",
        "",
        f"Machine: {m['nproc']} cores ({m['cpuModel']}), {m['memoryGiB']} GiB RAM, Python {m['python']}, "
        f"Linux {m['kernel']}. Load average at start {m['loadAverageAtStart']}, at end {m['loadAverageAtEnd']}; "
        f"busiest processes at start: {', '.join(m['busiestProcessesAtStart']) or 'none above 1%'}.",
        "",
        "The server, PostgreSQL, the stub LLM and the load generator share these cores, and other processes "
        "(other engineers' test suites) may run at the same time: each ratio below is measured within one run, "
        "its two sides close together (interleaved where possible), so it is steadier than the absolute figures.",
        f"Load generator: {info['generator']}.",
        "",
    ]
    if info.get("error"):
        lines += [f"**The run failed:** `{info['error']}`; the scenarios below are those that finished.", ""]
    lines += ["| # | scenario | figure | goal | |", "| --- | --- | --- | --- | --- |"]
    r = results
    if "s1_ceiling" in r:
        s = r["s1_ceiling"]["summary"]
        lines.append(
            f"| 1 | ceiling, 0 ms agent | {s['messagesPerSecond']} msg/s vs bare view {s['barePerSecond']} "
            f"req/s: **{s['ratio']}** (errors {sum(s['errors'].values())}) | >= 0.5 | {_met(s['met'])} |"
        )
    if "s2_slow_agent" in r:
        s = r["s2_slow_agent"]["summary"]
        lines.append(
            f"| 2 | slow agent, {s['clients']} clients, {s['agentLatencyMs']} ms | {s['throughput']} msg/s "
            f"vs {s['target']}: **{s['ratio']}**; errors {s['errors']}; max DB connections per process "
            f"{s['maxDbConnectionsPerProcess']}; {s['memoryPerInFlightKiB']} KiB per in-flight request | "
            f">= 0.9, 0 errors, <= 20 | {_met(s['met'])} |"
        )
    if "s3_flat_cost" in r:
        d = r["s3_flat_cost"]
        s = d["summary"]
        c, e, n = d["conversation"], d["contactsExisting"], d["contactsNew"]
        lines.append(
            f"| 3 | flat cost | position {c['positions']['short'][0]} vs {c['positions']['long'][0]}: "
            f"{c['shortMedianMs']} vs {c['longMedianMs']} ms, **{c['ratio']}**; existing contact among "
            f"{e['contacts'][0]:,} vs {e['contacts'][1]:,}: {e['smallMedianMs']} vs {e['largeMedianMs']} "
            f"ms, **{e['ratio']}**; new contact: {n['smallMedianMs']} vs {n['largeMedianMs']} ms, "
            f"**{n['ratio']}** | <= 1.1 | {_met(s['met'])} |"
        )
    if "s4_queries" in r:
        s = r["s4_queries"]["summary"]
        lines.append(
            f"| 4 | statements per message (OpenAI-compatible agent) | new contact "
            f"**{s['openai.newContact']}**, existing **{s['openai.existingContact']}**, replay "
            f"**{s['openai.idempotentReplay']}**; with an idempotency key: new "
            f"{s['openai.newContactWithKey']}, existing {s['openai.existingContactWithKey']}; built-in "
            f"agent: {s['builtin.newContact']} / {s['builtin.existingContact']} / "
            f"{s['builtin.idempotentReplay']} | 10, 10, 3 | {_met(s['met'])} |"
        )
    if "s5_added_latency" in r:
        s = r["s5_added_latency"]["summary"]
        lines.append(
            f"| 5 | latency added, open loop at {s['rate']} msg/s, {s['agentLatencyMs']} ms agent | "
            f"p50 **{s['addedP50Ms']} ms**, p99 **{s['addedP99Ms']} ms** (errors {s['errors']}) | "
            f"p99 < 50 ms | {_met(s['met'])} |"
        )
    lines.append("")
    if "s1_ceiling" in r:
        d = r["s1_ceiling"]
        lines += [
            "### Scenario 1 details",
            "",
            "| run | rate | p50 ms | p99 ms | busy cores: machine / gunicorn / PostgreSQL (bench db) / "
            "everything else | CPU ms per request: gunicorn / PostgreSQL |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for label in d["rounds"]:
            for run_, cpu in zip(d["rounds"][label], d["cpu"][label], strict=True):
                lat = run_["latencyMs"]
                lines.append(
                    f"| {label} | {run_['rate']}/s | {lat.get('p50')} | {lat.get('p99')} | "
                    f"{cpu['machineBusyCores']} / {cpu['gunicornCores']} / {cpu['postgresCores']} / "
                    f"{cpu['everythingElseCores']} | {cpu.get('gunicornCpuMsPerRequest')} / "
                    f"{cpu.get('postgresCpuMsPerRequest')} |"
                )
        s = d["summary"]
        lines += [
            "",
            f"{d['requestShape']}; {d['connections']} connections, {d['secondsPerRun']} s per run, "
            f"load average {d['loadAverage']['before']} before. The built-in agent (no OpenAI SDK, no HTTP "
            f"call) answers {s['builtinAgentPerSecond']} msg/s. CPU per answered request (gunicorn + the "
            f"database's backends), which the other processes on the machine disturb less than rates: "
            f"{s['cpuMsPerRequest']}; bare / message = **{s['cpuCostRatio']}**, the ratio to expect where "
            "both are CPU-bound on an otherwise idle machine.",
            "",
        ]
    if "s2_slow_agent" in r:
        d = r["s2_slow_agent"]
        db = d["dbConnections"]
        lines += [
            "### Scenario 2 details",
            "",
            f"Steady window {d['steadyWindowSeconds']} s of the load: {d['repliesInWindow']} replies. "
            f"Generator's own count: {d['load']['rate']} msg/s over the whole run including the ramp, "
            f"latency mean {d['load']['latencyMs'].get('mean')} ms, p99 {d['load']['latencyMs'].get('p99')} ms. "
            f"Per-worker DB connections (max, socket count / matched in pg_stat_activity): "
            f"{db['perWorkerMaxSocket']} / {db['perWorkerMaxMatchedInPgStatActivity']}, "
            f"database total max {db['databaseTotalMax']}. Memory: idle "
            f"{d['memory']['idleRssMiB']} MiB, under load {d['memory']['loadRssMedianMiB']} MiB (median), "
            f"{d['memory']['inFlight']} in flight.",
            "",
            f"Method (connections): {db['method']}. Method (memory): {d['memory']['method']}.",
            "",
        ]
    if "s3_flat_cost" in r:
        iso = r["s3_flat_cost"]["isolatedQueries"]
        lines += [
            "### Scenario 3 details: the queries alone (in-process, medians)",
            "",
            "| query | small | large | ratio |",
            "| --- | --- | --- | --- |",
        ]
        for name, q in iso.items():
            a, b = [k for k in q if k.endswith("MedianMs")]
            lines.append(f"| {name} | {q[a]} ms | {q[b]} ms | {q['ratio']} |")
        lines += ["", r["s3_flat_cost"]["method"] + ".", ""]
    if "profile" in r:
        p = r["profile"]
        wall, cpu = p["profiles"]["wall"], p["profiles"]["cpu"]
        lines += [
            "### Profile of the hot path",
            "",
            f"cProfile, in-process through Django's test client (the whole middleware and view stack, no "
            f"HTTP server), {p['requests']} messages each: new contact, idempotency key, 0 ms agent over "
            f"loopback. Without the profiler a message costs {p['wallMsPerRequest']} ms wall and "
            f"**{p['cpuMsPerRequest']} ms CPU** in this process (the bare view: "
            f"{p['bareViewCpuMsPerRequest']} ms CPU); the rest of the wall time is PostgreSQL and the stub. "
            f"Profiled with a wall clock ({wall['profiledMsPerRequest']} ms per message) and with a CPU "
            f"clock ({cpu['profiledMsPerRequest']} ms per message, the profiler's overhead included):",
            "",
            "| own time by area | wall ms/msg | CPU ms/msg |",
            "| --- | --- | --- |",
        ]
        for area in wall["areasMsPerRequest"]:
            lines.append(f"| {area} | {wall['areasMsPerRequest'][area]} | {cpu['areasMsPerRequest'].get(area, 0)} |")
        lines += ["", "| frame (cumulative) | wall ms/msg | CPU ms/msg |", "| --- | --- | --- |"]
        for frame in wall["functionsCumMsPerRequest"]:
            lines.append(
                f"| {frame} | {wall['functionsCumMsPerRequest'][frame]} | "
                f"{cpu['functionsCumMsPerRequest'].get(frame, 0)} |"
            )
        lines.append("")
    lines.append("Raw figures: `bench/results/*.json` (per scenario) and `run.json` (machine, config).")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="The Channels API benchmark (make bench).")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "") not in ("", "0"))
    parser.add_argument("--keep-db", action="store_true", help="keep the benchmark database for inspection")
    parser.add_argument("--db", default="", help="database name (default channels_bench[_quick])")
    parser.add_argument("--only", default="", help="comma list of s1,s2,s3,s4,s5,profile")
    parser.add_argument("--render", action="store_true", help="only rewrite RESULTS.md from the last JSON files")
    args = parser.parse_args()
    bench = Bench(args)
    if args.render:
        return bench.render_only()

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    return bench.main()


if __name__ == "__main__":
    sys.exit(main())
