"""Scenario 1: CPU per message against the bare reference view's CPU per request (issue #17's first goal),
and CPU per message at 500 requests in flight against 16 (its third), all in one interleaved loop; the
throughput ceiling, which scenarios 5 and 2 take their rates from, as a detail.

CPU is what the issue's goals count, not rates: on a shared 2-core machine a rate moves with everything else
that runs, the CPU one answered request costs the server (gunicorn's processes plus the bench database's
PostgreSQL backends) much less. Both loads are closed loops with a 0 ms agent, so the server is CPU-bound
at 16 in flight as at 500 and the only difference between the two is the number of requests it holds: what
that costs per message is what the 500-vs-16 ratio shows. The last round runs py-spy on the workers at 16
and at 500 (bench/pyspy.py: the `profile_load` result), to show where the difference goes.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

from bench.pyspy import RATE_HZ, PySpy, compare

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
    whole, during = bench.cpu_meter(), bench.cpu_meter()
    cpu: dict[str, list[dict]] = {label: [] for label in paths}
    seconds = {label: cfg["s1Seconds"] for label in paths}
    ramp = {label: cfg["s1Ramp"] for label in paths}
    seconds["messagesAt500"], ramp["messagesAt500"] = cfg["inFlightSeconds"], cfg["inFlightRamp"]
    profiled = {"messages": "at16", "messagesAt500": "at500"}  # in the last round (bench/pyspy.py)
    profiles: dict[str, dict] = {}
    for n in range(cfg["s1Rounds"]):  # alternate, so a change in the machine's other load hits all
        for label, path in paths.items():
            spy = None
            if n == cfg["s1Rounds"] - 1 and label in profiled:
                spy = PySpy(bench.web.pid, bench.logs / f"py-spy-{profiled[label]}.txt")
            whole.start()
            during.start()
            t0 = time.time()
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
            if label in channels:
                # CPU per message counts the whole load: from its start until the server has answered all
                # it accepted (the drain), over every reply. A window inside the load would not do at 500 in
                # flight: the first replies come only after seconds, then in waves. What the drain, with
                # fewer requests in flight, takes of the CPU is in drainCpuShare.
                load_cpu = during.stop()
                load["drainSeconds"] = bench.drain(timeout=180)
                done = bench.replies(channels[label], since=t0)
                measured = whole.stop(completed=len(done))
                server = ("gunicornCpuSeconds", "postgresCpuSeconds")
                load_seconds = sum(load_cpu[k] for k in server)
                total_seconds = sum(measured[k] for k in server)
                measured["drainCpuShare"] = round(1 - load_seconds / total_seconds, 3) if total_seconds else None
                # the rate, counted by the server: replies stored after the ramp until the load's end (the
                # generator counts only requests that start and end inside its run)
                load["generatorRate"] = load["rate"]
                load["rate"] = round(sum(1 for t in done if t0 + ramp[label] <= t < t1) / (t1 - t0 - ramp[label]), 2)
                load["serverCountedWindow"] = [ramp[label], round(t1 - t0, 1)]
                load["answered"] = len(done)
            else:  # the bare view: nothing to drain, wrk counts every answer
                during.stop()
                measured = whole.stop(completed=load["ok"])
            cpu[label].append(measured)
            rounds[label].append(load)
            if spy is not None:
                profiles[profiled[label]] = spy.stop()
                profiles[profiled[label]]["connections"] = connections[label]
    rate = {label: statistics.fmean(r["rate"] for r in runs) for label, runs in rounds.items()}
    errors = {label: sum(r["errors"] for r in runs) for label, runs in rounds.items()}

    def cpu_ms(label: str, *groups: str) -> float:  # CPU per answered request, mean over the rounds
        return statistics.fmean(sum(c.get(f"{g}CpuMsPerRequest", 0) for g in groups) for c in cpu[label])

    cost = {label: round(cpu_ms(label, "gunicorn", "postgres"), 2) for label in paths}
    gunicorn = {label: round(cpu_ms(label, "gunicorn"), 2) for label in paths}
    gc = {label: round(cpu_ms(label, "gunicornGc"), 2) for label in paths}

    def ratio(a: str, b: str) -> float | None:
        return round(cost[a] / cost[b], 2) if cost[b] else None

    cpu_ratio, builtin_ratio = ratio("messages", "bare"), ratio("messagesBuiltinAgent", "bare")
    in_flight = ratio("messagesAt500", "messages")
    bench.s1_rate, bench.s1_done = rate["messages"], True
    if profiles:
        last = {label: cpu[label][-1].get("gunicornCpuMsPerRequest") for label in profiled}
        bench.save(
            "profile_load",
            compare(
                profiles,
                {profiled[label]: ms for label, ms in last.items()},
                f"py-spy (bench/pyspy.py) on every worker in scenario 1's last round, from the start of the load "
                f"until the server had answered all of it, at {connections['messages']} and "
                f"{connections['messagesAt500']} in flight (0 ms agent, OpenAI-compatible stub) at {RATE_HZ} Hz; "
                "only the thread holding the GIL is sampled; area = file of the innermost frame; ms per message "
                "= share x that round's gunicorn CPU per message",
            ),
        )
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
            "requestShape": "POST, new contactIdentifier and X-Idempotency-Key per request, 0 ms agent "
            "(OpenAI-compatible stub over loopback, or the built-in agent); the bare view gets the same POST; "
            "the bench workspaces' rate limit is raised out of the way, the limiter still runs",
            "method": "closed loops, the four loads interleaved round by round; CPU per message = CPU seconds "
            "of gunicorn's processes and of the bench database's PostgreSQL backends from the start of a load "
            "until the server has answered everything it accepted, divided by the replies it stored (the bare "
            "view's: wrk's 2xx); drainCpuShare = the part of that CPU spent after the load stopped, when fewer "
            "requests are in flight; the bare view's rate counted by wrk, the messages' by the server (replies "
            "stored from the end of the ramp to the end of the load)",
        },
    )
