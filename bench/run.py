"""`make bench`: the load harness, on loopback, against the production stack.

    make bench                      # full run: bench/results/*.json and bench/RESULTS.md
    BENCH_QUICK=1 make bench        # smoke test with small counts: bench/results/quick/
    .venv/bin/python -m bench.run [--quick] [--keep-db] [--db NAME] [--only s1,s4] [--all] [--before DIR]
    .venv/bin/python -m bench.run --render [--before DIR]   # RESULTS.md again from the saved JSON

The default run measures the goals of issue #17 side by side (bench/report.py lists them): scenarios 1
(CPU per message against the bare view, at 16 and at 500 in flight, with a py-spy profile of the workers at
both), 4 (statements), 5 (added latency), 6 (a burst of first messages), 7 (one workspace vs fifty) and the
in-process profile. Scenarios 2 (slow agent) and 3 (flat cost), earlier issues' goals, run with
--all (or --only s2,s3). --before DIR (default bench/results/before/ when it exists, full runs only) adds
that saved run's figures as a "before" column.

What it does: creates its own PostgreSQL database (dropped at the end unless --keep-db), uses Redis db 8
(BENCH_REDIS_URL), migrates, makes the data through the apps' services (bench/fixtures.py), starts the stand-in LLM
(bench/llm_stub.py) and gunicorn exactly as `make serve` does (config/gunicorn.py, gevent worker, and its
defaults: the sizing variables WEB_CONCURRENCY, GUNICORN_* and DB_POOL_* are removed from the environment)
with the bench's settings (bench/settings.py: production's plus the bare view's URL), runs the scenarios and stops
every process it started, also on failure or Ctrl-C.

Every load is bounded in requests and in time. Traffic goes to 127.0.0.1 only.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.client import HTTPConnection
from pathlib import Path

import psutil
import psycopg

from bench import gcstats
from bench.common import (
    ANALYSIS_MARKER,
    BENCH,
    FULL,
    HOST,
    PYTHON,
    QUICK,
    ROOT,
    CpuMeter,
    Processes,
    free_port,
    git_commit,
    loadavg,
    machine,
    percentile,
    run,
    wait_http,
)
from bench.report import load_results, render_markdown
from bench.scenarios.s1_ceiling import s1_ceiling
from bench.scenarios.s2_slow_agent import s2_slow_agent
from bench.scenarios.s3_flat_cost import s3_flat_cost
from bench.scenarios.s4_queries import profile, s4_queries
from bench.scenarios.s5_added_latency import s5_added_latency
from bench.scenarios.s6_burst import s6_burst
from bench.scenarios.s7_workspaces import s7_workspaces

DEFAULT_STEPS = ("s4", "s1", "s5", "s6", "s7", "profile")
EXTRA_STEPS = ("s2", "s3")  # earlier issues' goals: --all or --only
# make serve's sizing comes from these (config/gunicorn.py, config/settings/base.py): the bench runs on
# their defaults, whatever the caller's shell exports
SIZING_VARIABLES = ("WEB_CONCURRENCY", "GUNICORN_", "DB_POOL_")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.quick = args.quick
        self.cfg = dict(QUICK if args.quick else FULL)
        self.only = set(args.only.split(",")) if args.only else None
        self.all = args.all
        before = args.before if args.before is not None else ("" if args.quick else str(BENCH / "results" / "before"))
        self.before_dir = Path(before) if before and Path(before).is_dir() else None
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
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "DJANGO_", *SIZING_VARIABLES))}
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
        if self.only is not None:
            return name in self.only
        return name in DEFAULT_STEPS or (self.all and name in EXTRA_STEPS)

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
        agent_ms = f"0,{self.cfg['s5AgentMs']},{self.cfg['burstAgentMs']},{self.cfg['s2AgentMs']}"
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
                "--spread",
                str(self.cfg["wsCount"]),
                "--out",
                str(self.fixtures_path),
            ],
            self.env,
            timeout=300,
            log=self.logs / "fixtures.log",
        )
        self.fixtures = json.loads(self.fixtures_path.read_text())
        # `make serve` without its migrate step (done above) and its sync: the same gunicorn command line.
        self.gc_dir = self.logs / "gc"
        shutil.rmtree(self.gc_dir, ignore_errors=True)
        self.gc_dir.mkdir()
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
            {**self.env, "BENCH_GC_STATS_DIR": str(self.gc_dir)},
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
        """`path` and `key` may be comma lists of the same length (round robin over the targets)."""
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
        """A closed loop of `connections` clients (wrk, else bench.loadgen); `path` and `key` may be comma
        lists of the same length, one target per workspace, used round robin."""
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
        data["run"] = {"startedAt": self.started_at.isoformat(timespec="seconds"), "commit": self.info["commit"]}
        self.results[name] = data
        self._write(name)
        print(f"bench: {name}: {json.dumps(data.get('summary', {}))}", flush=True)

    def _write(self, name: str) -> None:
        (self.out / f"{name}.json").write_text(json.dumps(self.results[name], indent=2) + "\n")

    # --- what the scenarios share (the scenarios themselves: bench/scenarios/) ---------------------------

    def replies(self, channel: str | list[str], *, since: float) -> list[float]:
        """When each reply of the channel's (or channels') conversations was stored (epoch seconds), from
        `since` on."""
        channels = [channel] if isinstance(channel, str) else channel
        with psycopg.connect(self.database_url) as conn:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT extract(epoch FROM m.created_at)::float8 FROM conversations_message m "
                    "JOIN conversations_conversation c ON c.id = m.conversation_id WHERE c.channel_id = ANY(%s) "
                    "AND m.direction = 'OUTBOUND' AND m.part = 1 AND m.created_at >= to_timestamp(%s)",
                    [channels, since],
                ).fetchall()
            ]

    def cpu_meter(self) -> CpuMeter:
        """CPU of the server side: gunicorn (master and workers), the stub, the bench database's backends;
        and the part of the workers' CPU spent in the garbage collector (bench/gcstats.py)."""
        return CpuMeter(
            {
                "gunicorn": lambda: [self.web.pid, *self.workers],
                "stub": lambda: [self.stub.pid],
                "postgres": self.pg_backends,
            },
            {"gunicornGc": lambda: sum(gcstats.totals(str(self.gc_dir), self.workers)["seconds"])},
        )

    def burst(self, channel: str, *, clients: int, prefix: str, timeout: float = 60) -> dict:
        """`clients` first messages sent at once over connections opened beforehand (bench.loadgen burst)."""
        return self.loadgen(
            "burst", channel=channel, seconds=0, prefix=prefix, clients=clients, max_requests=clients, timeout=timeout
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
        """Rewrite RESULTS.md from the last run's JSON files (after a change of bench/report.py)."""
        info, results = load_results(self.out)
        self.write_markdown(info, results)
        return 0

    def write_markdown(self, run_info: dict, results: dict) -> None:
        target = self.out / "RESULTS.md" if self.quick else BENCH / "RESULTS.md"
        kept = ""
        if target.exists():
            text = target.read_text()
            if ANALYSIS_MARKER in text:
                kept = text.split(ANALYSIS_MARKER, 1)[1]
        before = load_results(self.before_dir) if self.before_dir else None
        target.write_text(render_markdown(run_info, results, before) + "\n" + ANALYSIS_MARKER + kept)
        print(f"bench: wrote {target.relative_to(ROOT)}", flush=True)

    def teardown(self) -> None:
        self.procs.stop_all()
        if not self.keep_db:
            try:
                with psycopg.connect(self.admin_url, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            except psycopg.Error as exc:
                print(f"bench: could not drop {self.db_name}: {exc}", file=sys.stderr)

    def step(self, name: str, function) -> None:
        """One scenario, with the machine's load average before and after it in each result it saves."""
        print(f"bench: {name} ... (load average {loadavg()})", flush=True)
        before, known = loadavg(), set(self.results)
        function(self)
        after = loadavg()
        for result in set(self.results) - known:
            self.results[result]["loadAverage"] = {"before": before, "after": after}
            self._write(result)

    def main(self) -> int:
        error = None
        try:
            self.setup()
            self.s1_rate, self.s1_done = 0.0, False
            steps = {
                "s4": s4_queries,
                "s1": s1_ceiling,
                "s5": s5_added_latency,
                "s6": s6_burst,
                "s7": s7_workspaces,
                "profile": profile,
                "s2": s2_slow_agent,
                "s3": s3_flat_cost,  # last: it adds a million contacts to the database
            }
            for name, function in steps.items():
                if not self.want(name):
                    continue
                if name in ("s5", "s2") and not self.s1_done:
                    self.step("s1", s1_ceiling)  # both need scenario 1's rate of this run
                self.step(name, function)
        except BaseException as exc:  # KeyboardInterrupt too: report what ran, then stop everything
            error = f"{type(exc).__name__}: {exc}"
            print(f"bench: FAILED: {error}", file=sys.stderr, flush=True)
        finally:
            self.teardown()
        if self.results or error is None:
            self.report(error)
        return 1 if error else 0


def main() -> int:
    parser = argparse.ArgumentParser(description="The Channels API benchmark (make bench).")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "") not in ("", "0"))
    parser.add_argument("--keep-db", action="store_true", help="keep the benchmark database for inspection")
    parser.add_argument("--db", default="", help="database name (default channels_bench[_quick])")
    parser.add_argument("--only", default="", help="comma list of s1,s2,s3,s4,s5,s6,s7,profile")
    parser.add_argument("--all", action="store_true", help="also scenarios 2 and 3 (earlier issues' goals)")
    parser.add_argument(
        "--before",
        default=None,
        help="a saved run's folder (run.json and the scenarios' JSON) for the 'before' column; default "
        "bench/results/before/ if it exists (full runs), '' for none",
    )
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
