"""Scenario 6: a burst of first messages (issue #17's second goal): 200 new contacts of one workspace send
their first message at the same moment to a 1 s agent, on `make serve`'s defaults; every one must be
answered 200 OK, the last within 1.5 x the agent's latency of the first being sent.

The generator (bench.loadgen burst) opens the 200 connections first and releases all requests at once, so
the figure is the server's: from the first request sent to the last answer received, over the agent's
latency. A few rounds, fresh contacts each, after a small burst that warms the 1 s agent's client.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

from bench.common import percentile

if TYPE_CHECKING:
    from bench.run import Bench

GOAL = 1.5  # last answer, from the first request sent, in agent latencies


def s6_burst(bench: Bench) -> None:
    cfg = bench.cfg
    agent_s = cfg["burstAgentMs"] / 1000
    channel = bench.fixtures["channels"][str(cfg["burstAgentMs"])]
    n = cfg["burstMessages"]
    bench.burst(channel, clients=cfg["burstWarmup"], prefix=f"{bench.token}s6w")
    bench.drain(timeout=60)
    meter = bench.cpu_meter()
    rounds = []
    for r in range(cfg["burstRounds"]):
        time.sleep(2)  # the previous round's connections closed, the workers idle
        meter.start()
        data = bench.burst(channel, clients=n, prefix=f"{bench.token}s6-{r}")
        drained = bench.drain(timeout=60)
        cpu = meter.stop(completed=data["ok"])
        latencies = [s[1] for s in data["samples"] if 200 <= s[2] < 300]
        rounds.append(
            {
                "ok": data["ok"],
                "statuses": data["statuses"],
                "spanSeconds": data["spanSeconds"],
                "ratio": round(data["spanSeconds"] / agent_s, 3),
                "sendSpreadMs": round((data["lastSentOffset"] - data["firstSentOffset"]) * 1000, 1),
                "latencySeconds": {
                    p: round(percentile(latencies, float(p)), 3) if latencies else None
                    for p in ("0", "50", "90", "99", "100")
                },
                "cpu": cpu,
                "drainSeconds": drained,
            }
        )
    ratios = [r["ratio"] for r in rounds]
    median = statistics.median(ratios)
    all_ok = all(r["ok"] == n for r in rounds)
    bench.save(
        "s6_burst",
        {
            "summary": {
                "messages": n,
                "agentLatencyMs": cfg["burstAgentMs"],
                "ratios": ratios,
                "medianRatio": round(median, 3),
                "allOk": all_ok,
                "okPerRound": [r["ok"] for r in rounds],
                "goal": f"<= {GOAL} x the agent's latency, every message 200",
                "met": median <= GOAL and all_ok,
                "cpuMsPerMessage": round(
                    statistics.fmean(
                        r["cpu"].get("gunicornCpuMsPerRequest", 0) + r["cpu"].get("postgresCpuMsPerRequest", 0)
                        for r in rounds
                    ),
                    2,
                ),
            },
            "rounds": rounds,
            "requestShape": "POST, a new contactIdentifier and X-Idempotency-Key per request, one workspace, "
            "the OpenAI-compatible stub agent answering after the agent latency",
            "method": "bench.loadgen burst: the connections opened first, the requests released together "
            "(gevent); figure = last answer received - first request sent, over the agent's latency; the "
            "median over the rounds; CPU (gunicorn + the bench database's backends) from the release until "
            "the server has answered everything",
        },
    )
