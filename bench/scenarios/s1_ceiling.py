"""Scenario 1: the throughput ceiling of the messages endpoint (and of the bare reference view)."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

from bench.common import (
    CpuMeter,
    loadavg,
)

if TYPE_CHECKING:
    from bench.run import Bench


def s1_ceiling(bench: Bench) -> None:
    cfg, load_before = bench.cfg, loadavg()
    channels = {
        "messages": bench.fixtures["channels"]["0"],
        # not part of the ratio: the built-in agent instead of the OpenAI SDK, to show the SDK's share
        "messagesBuiltinAgent": bench.fixtures["builtinChannel"],
    }
    paths = {"bare": "/api/bench/bare", **{label: bench.messages_path(ch) for label, ch in channels.items()}}
    bound = 200_000  # responses per wrk thread: far above what a 2-core box answers in the duration
    for label, path in paths.items():  # warm every path
        bench.closed_load(
            path=path,
            connections=cfg["s1Connections"],
            seconds=cfg["warmupSeconds"],
            prefix=f"{bench.token}s1w-{label}",
            max_requests=bound,
        )
        bench.drain(timeout=120)
    rounds: dict[str, list[dict]] = {label: [] for label in paths}
    meter = CpuMeter(
        {
            "gunicorn": lambda: [bench.web.pid, *bench.workers],
            "stub": lambda: [bench.stub.pid],
            "postgres": bench.pg_backends,
        }
    )
    cpu: dict[str, list[dict]] = {label: [] for label in paths}
    ramp = cfg["s1Ramp"]
    for n in range(cfg["s1Rounds"]):  # alternate, so a change in the machine's other load hits all
        for label, path in paths.items():
            meter.start()
            t0 = time.time()
            load = bench.closed_load(
                path=path,
                connections=cfg["s1Connections"],
                seconds=cfg["s1Seconds"],
                prefix=f"{bench.token}s1-{label}-{n}",
                max_requests=bound,
            )
            t1 = time.time()
            if label in channels:
                # Counted by the server: replies stored in the window after the ramp. The generator counts
                # only requests that both start and end inside its run, which under-counts when a message
                # takes seconds on a busy machine. Then drain, so CPU per request covers whole requests.
                load["drainSeconds"] = bench.drain(timeout=120)
                done = bench.replies(channels[label], since=t0)
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
    bench.s1_rate, bench.s1_done = rate["messages"], True
    bench.save(
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
