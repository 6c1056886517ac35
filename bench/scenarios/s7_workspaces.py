"""Scenario 7: one workspace taking all the load vs the same load spread over 50 workspaces, each with its
own key and channel (issue #17's fourth goal): throughput one / fifty >= 0.9.

Every message reserves and settles credits on its workspace's row, so one workspace's messages queue on that
row's lock, and a greenlet waiting for it holds a pooled connection. The load that shows it: a closed loop
with many connections (200: ten times a worker's pool) and a 0 ms agent, so the row is written as often as the
server can; the fifty-workspace side sends the same requests round robin over the fifty (its wrk script picks
the key and channel per request). The sides alternate order round by round; throughput is counted by the
server (every reply of a load, over the time to its last), the figure is the median of the rounds' ratios;
CPU per message as in scenario 1.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import Bench

GOAL = 0.9  # one workspace's throughput / fifty's


def s7_workspaces(bench: Bench) -> None:
    cfg = bench.cfg
    one, spread = bench.fixtures["oneWorkspace"], bench.fixtures["spreadWorkspaces"]
    sides = {
        "one": [one],
        "fifty": spread,
    }
    connections, ramp, bound = cfg["wsConnections"], cfg["wsRamp"], 200_000
    for label, targets in sides.items():  # warm: every key and channel once per worker, at least
        bench.closed_load(
            path=",".join(bench.messages_path(t["channelId"]) for t in targets),
            key=",".join(t["apiKey"] for t in targets),
            connections=min(connections, 4 * len(targets) + 16),
            seconds=cfg["warmupSeconds"],
            prefix=f"{bench.token}s7w-{label}",
            max_requests=bound,
            timeout=60,
        )
        bench.drain(timeout=120)
    meter = bench.cpu_meter()
    runs: dict[str, list[dict]] = {label: [] for label in sides}
    for n in range(cfg["wsRounds"]):
        order = list(sides) if n % 2 == 0 else list(reversed(sides))
        for label in order:
            targets = sides[label]
            meter.start()
            t0 = time.time()
            load = bench.closed_load(
                path=",".join(bench.messages_path(t["channelId"]) for t in targets),
                key=",".join(t["apiKey"] for t in targets),
                connections=connections,
                seconds=cfg["wsSeconds"],
                prefix=f"{bench.token}s7-{label}-{n}",
                max_requests=bound,
                timeout=60,
            )
            t1 = time.time()
            load["drainSeconds"] = bench.drain(timeout=120)
            done = bench.replies([t["channelId"] for t in targets], since=t0)
            load["generatorRate"] = load["rate"]
            # every reply over the time to the last one: at 200 in flight replies come in waves, which a
            # window inside the load would cut at random; the rate in the window is a detail
            load["rate"] = round(len(done) / (max(done) - t0), 2) if done else 0.0
            load["windowRate"] = round(sum(1 for t in done if t0 + ramp <= t < t1) / (t1 - t0 - ramp), 2)
            load["answered"] = len(done)
            load["cpu"] = meter.stop(completed=len(done))
            runs[label].append(load)
    rate = {label: statistics.fmean(r["rate"] for r in rs) for label, rs in runs.items()}
    cpu = {
        label: round(
            statistics.fmean(
                r["cpu"].get("gunicornCpuMsPerRequest", 0) + r["cpu"].get("postgresCpuMsPerRequest", 0) for r in rs
            ),
            2,
        )
        for label, rs in runs.items()
    }
    errors = {label: sum(r["errors"] for r in rs) for label, rs in runs.items()}
    # the ratio of each round's two loads (run one after the other), then the median over the rounds: a round
    # in which the machine's other load came or went counts once
    ratios = [one["rate"] / fifty["rate"] if fifty["rate"] else 0.0 for one, fifty in zip(*runs.values(), strict=True)]
    ratio = statistics.median(ratios)
    # the same with each rate per core that the machine's other processes left free (2 cores minus what
    # everything but the server, the stub and PostgreSQL used): on a shared machine the other load moves
    # between the rounds, and a row lock that leaves cores idle still shows here
    nproc = os.cpu_count() or 1

    def per_free_core(run: dict) -> float:
        return run["rate"] / max(0.1, nproc - run["cpu"]["everythingElseCores"])

    corrected = statistics.median(
        per_free_core(one) / per_free_core(fifty) if fifty["rate"] else 0.0
        for one, fifty in zip(*runs.values(), strict=True)
    )
    bench.save(
        "s7_workspaces",
        {
            "summary": {
                "workspaces": len(spread),
                "connections": connections,
                "onePerSecond": round(rate["one"], 1),
                "fiftyPerSecond": round(rate["fifty"], 1),
                "ratio": round(ratio, 3),
                "roundRatios": [round(r, 3) for r in ratios],
                "ratioPerFreeCore": round(corrected, 3),
                "goal": f">= {GOAL}",
                "met": ratio >= GOAL and not any(errors.values()),
                "cpuMsPerMessage": cpu,
                "errors": errors,
            },
            "agentLatencyMs": 0,
            "secondsPerRun": cfg["wsSeconds"],
            "runs": runs,
            "method": f"median over the rounds of one / fifty; closed loop, {connections} connections, 0 ms agent, "
            "a new contact and idempotency key per request; the one-workspace and fifty-workspace loads "
            "alternate; rate = every reply of the load over the time from its start to the last reply "
            f"(windowRate: replies stored from {ramp} s after the start to the end of the load); CPU = gunicorn "
            "+ the bench database's backends until drained, per answered message",
        },
    )
