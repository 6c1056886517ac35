"""Scenario 5: the latency the platform adds to the agent's own, in an open loop at half the ceiling
(scenario 1's rate for the same messages, same run): issue #17's p99 < 50 ms."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.common import percentile

if TYPE_CHECKING:
    from bench.run import Bench

RATE_FRACTION = 0.5  # of scenario 1's messages per second
P99_GOAL_MS = 50.0


def s5_added_latency(bench: Bench) -> None:
    cfg = bench.cfg
    rate = max(1.0, round(bench.s1_rate * RATE_FRACTION, 1))
    agent_s = cfg["s5AgentMs"] / 1000
    channel = bench.fixtures["channels"][str(cfg["s5AgentMs"])]
    bench.loadgen(
        "open", channel=channel, seconds=2, prefix=f"{bench.token}s5w", rate=rate, max_requests=int(rate * 2) + 1
    )
    data = bench.loadgen(
        "open",
        channel=channel,
        seconds=cfg["s5Seconds"],
        prefix=f"{bench.token}s5",
        rate=rate,
        max_requests=int(rate * cfg["s5Seconds"]) + 1,
    )
    ok = [s for s in data["samples"] if 200 <= s[3] < 300]
    total = [s[1] * 1000 for s in ok]
    added = [(s[1] - agent_s) * 1000 for s in ok]
    added_service = [(s[2] - agent_s) * 1000 for s in ok]
    p50, p99 = percentile(added, 50), percentile(added, 99)
    bench.save(
        "s5_added_latency",
        {
            "summary": {
                "rate": rate,
                "agentLatencyMs": cfg["s5AgentMs"],
                "addedP50Ms": round(p50, 1),
                "addedP99Ms": round(p99, 1),
                "ceiling": round(bench.s1_rate, 1),
                "rateFraction": RATE_FRACTION,
                "goal": f"p99 < {P99_GOAL_MS:g} ms",
                "met": p99 < P99_GOAL_MS and data["errors"] == 0,
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
            "method": f"open loop at {RATE_FRACTION:g} x scenario 1's rate; latency counted from each request's "
            "scheduled start (no coordinated omission) minus the stub's fixed latency; 'service time' counts from "
            "the actual send",
        },
    )
