"""Scenario 1: CPU per message against the bare reference view's CPU per request (issue #17's first goal),
and CPU per message at 500 requests in flight against 16 (its third), all in one interleaved loop; the
throughput ceiling, which scenarios 5 and 2 take their rates from, as a detail.

CPU is what the issue's goals count, not rates: on a shared 2-core machine a rate moves with everything else
that runs, the CPU one answered request costs the server (gunicorn's processes plus the bench database's
PostgreSQL backends) much less. Both loads are closed loops with a 0 ms agent, so the server is CPU-bound
at 16 in flight as at 500 and the only difference between the two is the number of requests it holds: what
that costs per message is what the 500-vs-16 ratio shows (scenario 8 profiles where it goes).
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import Bench

CPU_RATIO_GOAL = 6.0  # message / bare view, CPU per request (OpenAI-compatible agent)
IN_FLIGHT_GOAL = 1.3  # CPU per message, 500 in flight / 16 in flight


def s1_ceiling(bench: Bench) -> None:
    cfg = bench.cfg
    channel = bench.fixtures["channels"]["0"]
    channels = {
        "messages": channel,
        # the built-in agent instead of the OpenAI SDK: the SDK's share, and issue #17's "lower still"
        "messagesBuiltinAgent": bench.fixtures["builtinChannel"],
        "messagesAt500": channel,  # the same requests, many more at once
    }
    connections = {label: cfg["s1Connections"] for label in ("bare", "messages", "messagesBuiltinAgent")}
    connections["messagesAt500"] = cfg["inFlightHigh"]
    paths = {"bare": "/api/bench/bare", **{label: bench.messages_path(ch) for label, ch in channels.items()}}
    bound = 200_000  # responses per wrk thread: far above what a 2-core box answers in the duration
    for label, path in paths.items():  # warm every path (the 500 one is the 16 one's path)
        if label == "messagesAt500":
            continue
        bench.closed_load(
            path=path,
            connections=connections[label],
            seconds=cfg["warmupSeconds"],
            prefix=f"{bench.token}s1w-{label}",
            max_requests=bound,
        )
        bench.drain(timeout=120)
    rounds: dict[str, list[dict]] = {label: [] for label in paths}
    whole, window = bench.cpu_meter(), bench.cpu_meter()
    cpu: dict[str, list[dict]] = {label: [] for label in paths}
    cpu_whole: dict[str, list[dict]] = {label: [] for label in channels}
    seconds = {label: cfg["s1Seconds"] for label in paths}
    ramp = {label: cfg["s1Ramp"] for label in paths}
    seconds["messagesAt500"], ramp["messagesAt500"] = cfg["inFlightSeconds"], cfg["inFlightRamp"]
    for n in range(cfg["s1Rounds"]):  # alternate, so a change in the machine's other load hits all
        for label, path in paths.items():
            whole.start()
            t0 = time.time()
            timer = threading.Timer(ramp[label], window.start)  # the window: from the ramp's end to the load's
            timer.start()
            load = bench.closed_load(
                path=path,
                connections=connections[label],
                seconds=seconds[label],
                prefix=f"{bench.token}s1-{label}-{n}",
                max_requests=bound,
                # a request at 500 in flight waits seconds for its turn: wrk's timeout would reconnect and
                # send another one while the server still works on the first
                timeout=60 if connections[label] > 100 else 10,
            )
            t1 = time.time()
            timer.join()
            if label in channels:
                # Counted by the server: replies stored in the window after the ramp. The generator counts
                # only requests that both start and end inside its run, which under-counts when a message
                # takes seconds on a busy machine.
                done = bench.replies(channels[label], since=t0)
                in_window = sum(1 for t in done if t0 + ramp[label] <= t < t1)
                cpu[label].append(window.stop(completed=in_window))
                load["drainSeconds"] = bench.drain(timeout=120)
                done = bench.replies(channels[label], since=t0)
                load["generatorRate"] = load["rate"]
                load["rate"] = round(in_window / (t1 - t0 - ramp[label]), 2)
                load["serverCountedWindow"] = [ramp[label], round(t1 - t0, 1)]
                load["answered"] = len(done)
                cpu_whole[label].append(whole.stop(completed=len(done)))
            else:  # the bare view: nothing to drain, wrk counts every answer
                window.stop()
                cpu[label].append(whole.stop(completed=load["ok"]))
            rounds[label].append(load)
    rate = {label: statistics.fmean(r["rate"] for r in runs) for label, runs in rounds.items()}
    errors = {label: sum(r["errors"] for r in runs) for label, runs in rounds.items()}

    def cpu_ms(label: str, *groups: str, runs: dict = cpu) -> float:  # per answered request, mean over rounds
        return statistics.fmean(sum(c.get(f"{g}CpuMsPerRequest", 0) for g in groups) for c in runs[label])

    cost = {label: round(cpu_ms(label, "gunicorn", "postgres"), 2) for label in paths}
    gunicorn = {label: round(cpu_ms(label, "gunicorn"), 2) for label in paths}
    gc = {label: round(cpu_ms(label, "gunicornGc"), 2) for label in paths}
    whole_cost = {label: round(cpu_ms(label, "gunicorn", "postgres", runs=cpu_whole), 2) for label in channels}

    def ratio(a: str, b: str) -> float | None:
        return round(cost[a] / cost[b], 2) if cost[b] else None

    cpu_ratio, builtin_ratio = ratio("messages", "bare"), ratio("messagesBuiltinAgent", "bare")
    in_flight = ratio("messagesAt500", "messages")
    bench.s1_rate, bench.s1_done = rate["messages"], True
    bench.save(
        "s1_ceiling",
        {
            "summary": {
                "cpuMsPerRequest": cost,
                "cpuRatio": cpu_ratio,
                "cpuRatioGoal": f"<= {CPU_RATIO_GOAL}",
                "cpuRatioMet": cpu_ratio is not None and cpu_ratio <= CPU_RATIO_GOAL,
                "builtinCpuRatio": builtin_ratio,
                "builtinCpuRatioGoal": f"<= {CPU_RATIO_GOAL} and below the OpenAI-compatible agent's",
                "builtinCpuRatioMet": builtin_ratio is not None
                and builtin_ratio <= CPU_RATIO_GOAL
                and (cpu_ratio is None or builtin_ratio < cpu_ratio),
                "inFlightCpuRatio": in_flight,
                "inFlightGoal": f"<= {IN_FLIGHT_GOAL}",
                "inFlightMet": in_flight is not None and in_flight <= IN_FLIGHT_GOAL and errors["messagesAt500"] == 0,
                "inFlight": [cfg["s1Connections"], cfg["inFlightHigh"]],
                "gunicornCpuMsPerRequest": gunicorn,
                "gcCpuMsPerRequest": gc,
                "cpuMsPerRequestWholeRun": whole_cost,
                "messagesPerSecond": round(rate["messages"], 1),
                "barePerSecond": round(rate["bare"], 1),
                "throughputRatio": round(rate["messages"] / rate["bare"], 3) if rate["bare"] else None,
                "builtinAgentPerSecond": round(rate["messagesBuiltinAgent"], 1),
                "at500PerSecond": round(rate["messagesAt500"], 1),
                "errors": errors,
            },
            "agentLatencyMs": 0,
            "connections": connections,
            "secondsPerRun": seconds,
            "rampSeconds": ramp,
            "rounds": rounds,
            "cpu": cpu,
            "cpuWholeRun": cpu_whole,
            "requestShape": "POST, new contactIdentifier and X-Idempotency-Key per request, 0 ms agent "
            "(OpenAI-compatible stub over loopback, or the built-in agent); the bare view gets the same POST; "
            "the bench workspaces' rate limit is raised out of the way, the limiter still runs",
            "method": "closed loops, the four loads interleaved round by round; CPU per message = CPU seconds "
            "of gunicorn's processes and of the bench database's PostgreSQL backends in the window from the "
            "end of the ramp to the end of the load, divided by the replies the server stored in that window "
            "(so the drain, when fewer requests are in flight, does not dilute the 500 figure; "
            "cpuMsPerRequestWholeRun counts from the start until everything is answered); the bare view's: the "
            "whole run over wrk's 2xx, its rate counted by wrk; the messages' rates counted by the server "
            "(replies stored in the window)",
        },
    )
