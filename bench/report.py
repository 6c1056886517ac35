"""bench/RESULTS.md from a run's JSON files: one table of issue #17's goals (each with its figure, its goal and
whether it is met, and the machine's load around the scenario that measured it), then each scenario's details.

With `before` (another run's folder, e.g. bench/results/before/ saved from the code before a change:
`cp bench/results/*.json bench/results/before/`), the table gets a "before" column beside the figures of
this run, and the details name that run.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.common import ROOT

# every result file a run may write, in the order of the details
RESULT_NAMES = (
    "s1_ceiling",
    "s4_queries",
    "s5_added_latency",
    "s6_burst",
    "s7_workspaces",
    "profile_load",
    "profile",
    "s2_slow_agent",
    "s3_flat_cost",
)


def load_results(folder: Path) -> tuple[dict, dict]:
    """A run's run.json and its scenarios' results (those present)."""
    info = json.loads((folder / "run.json").read_text())
    info["folder"] = str(folder.resolve().relative_to(ROOT)) if folder.resolve().is_relative_to(ROOT) else str(folder)
    results = {
        name: json.loads((folder / f"{name}.json").read_text())
        for name in RESULT_NAMES
        if (folder / f"{name}.json").exists()
    }
    return info, results


def _met(value: bool | None) -> str:
    if value is None:
        return ""
    return "met" if value else "**not met**"


def _load(result: dict | None) -> str:
    load = (result or {}).get("loadAverage")
    return f"{load['before'][0]} → {load['after'][0]}" if load else ""


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def _x(value: float | None, unit: str = "×") -> str:
    return "n/a" if value is None else f"{value:g}{unit}"


def goal_rows(r: dict) -> list[dict]:
    """Issue #17's goals in its order: key, what, value (short), detail, goal, met, the result it comes from."""
    rows: list[dict] = []

    def add(key: str, what: str, goal: str, source: str, make) -> None:
        result = r.get(source)
        row: dict = {"key": key, "what": what, "goal": goal, "source": source, "value": "not run", "detail": ""}
        row["met"] = None
        if result is not None:
            row.update(make(result["summary"], result))
        rows.append(row)

    def cpu(s: dict, d: dict) -> dict:
        c = s["cpuMsPerRequest"]
        return {
            "value": _x(s["cpuRatio"]),
            "detail": f"{c['messages']} vs {c['bare']} ms CPU per request (gunicorn + PostgreSQL), "
            f"{d['connections']['messages']} in flight; throughput {s['messagesPerSecond']} vs "
            f"{s['barePerSecond']} req/s ({s['throughputRatio']})",
            "met": s["cpuRatioMet"],
        }

    add("1", "CPU per message / the bare view's CPU per request, OpenAI-compatible agent", "≤ 6×", "s1_ceiling", cpu)

    def builtin(s: dict, d: dict) -> dict:
        c = s["cpuMsPerRequest"]
        return {
            "value": _x(s["builtinCpuRatio"]),
            "detail": f"{c['messagesBuiltinAgent']} ms per message; {s['builtinAgentPerSecond']} msg/s",
            "met": s["builtinCpuRatioMet"],
        }

    add("1b", "the same with the built-in agent", "≤ 6×, below 1", "s1_ceiling", builtin)

    def burst(s: dict, d: dict) -> dict:
        rounds = d["rounds"]
        return {
            "value": _x(s["medianRatio"]) + " (median)",
            "detail": f"{s['messages']} first messages at once, {s['agentLatencyMs']} ms agent: rounds "
            + ", ".join(f"{x['spanSeconds']:.2f} s" for x in rounds)
            + " from the first sent to the last answered; OK "
            + " / ".join(str(n) for n in s["okPerRound"])
            + f"; {s['cpuMsPerMessage']} ms CPU per message",
            "met": s["met"],
        }

    add("2", "burst of first messages: last answer / agent latency", "≤ 1.5×, all 200 OK", "s6_burst", burst)

    def in_flight(s: dict, d: dict) -> dict:
        c, g = s["cpuMsPerRequest"], s["gcCpuMsPerRequest"]
        low, high = s["inFlight"]
        return {
            "value": _x(s["inFlightCpuRatio"]),
            "detail": f"{c['messagesAt500']} vs {c['messages']} ms CPU per answered message at {high} vs {low} in "
            f"flight (of which the workers' garbage collector {g['messagesAt500']} vs {g['messages']}); "
            f"{s['at500PerSecond']} vs {s['messagesPerSecond']} msg/s; errors at {high}: "
            f"{s['errors']['messagesAt500']}",
            "met": s["inFlightMet"],
        }

    add("3", "CPU per message at 500 in flight / at 16", "≤ 1.3×", "s1_ceiling", in_flight)

    def workspaces(s: dict, d: dict) -> dict:
        return {
            "value": _x(s["ratio"], ""),
            "detail": f"median of the rounds' {', '.join(str(x) for x in s.get('roundRatios', []))} (per core the "
            f"machine's other processes left free: {s.get('ratioPerFreeCore')}); mean "
            f"{s['onePerSecond']} vs {s['fiftyPerSecond']} msg/s, {s['connections']} connections, 0 ms "
            f"agent; CPU per message {s['cpuMsPerMessage']['one']} vs {s['cpuMsPerMessage']['fifty']} ms; errors "
            f"{s['errors']['one']} / {s['errors']['fifty']}",
            "met": s["met"],
        }

    add("4", "throughput: one workspace / the same load over 50 workspaces", "≥ 0.9", "s7_workspaces", workspaces)

    def statements(s: dict, d: dict) -> dict:
        def counts(agent: str) -> str:
            return (
                f"{s[f'{agent}.newContact']} / {s[f'{agent}.existingContact']} / {s[f'{agent}.idempotentReplay']}, "
                f"key +{s[f'{agent}.keyExtra']}"
            )

        return {
            "value": counts("openai"),
            "detail": f"new / existing / replay, OpenAI-compatible agent; built-in agent {counts('builtin')}",
            "met": s["met"],
        }

    add("5", "statements per message: new / existing / replay", "≤ 8 / 7 / 2, key ≤ +2", "s4_queries", statements)

    def latency(s: dict, d: dict) -> dict:
        return {
            "value": f"p99 {s['addedP99Ms']} ms",
            "detail": f"p50 {s['addedP50Ms']} ms; open loop at {s['rate']} msg/s ({s.get('rateFraction', 0.5):g} × "
            f"scenario 1's {s.get('ceiling', '?')}), {s['agentLatencyMs']} ms agent; errors {s['errors']}",
            "met": s["met"],
        }

    add("6", "latency added at half the ceiling", "p99 < 50 ms", "s5_added_latency", latency)

    def profile(s: dict, d: dict) -> dict:
        growth = [f"{area} {ms:+g} ms" for area, ms in list(d["growthMsPerMessage"].items())[:3]]
        cpu = s["gunicornCpuMsPerMessage"]
        return {
            "value": f"{cpu['at16']} → {cpu['at500']} ms",
            "detail": "gunicorn CPU per message, 16 → 500 in flight; grows most: " + "; ".join(growth),
            "met": None,
        }

    add("7", "profile under load (py-spy, 16 vs 500 in flight)", "explains 3", "profile_load", profile)
    return rows


def render_markdown(info: dict, results: dict, before: tuple[dict, dict] | None = None) -> str:
    m = info["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Latest run: `{info['command']}` at {info['startedAt']} (finished {info['finishedAt']}), "
        f"commit `{m['commit']}`.",
        "",
        f"Machine: {m['nproc']} cores ({m['cpuModel']}), {m['memoryGiB']} GiB RAM, Python {m['python']}, "
        f"Linux {m['kernel']}. Load average at start {m['loadAverageAtStart']}, at end {m.get('loadAverageAtEnd')}; "
        f"busiest processes at start: {', '.join(m['busiestProcessesAtStart']) or 'none above 1%'}.",
        "",
        "The server, PostgreSQL, the stub LLM and the load generator share these cores, and other processes "
        "(other engineers' test suites) may run at the same time: each ratio below is measured within one run, "
        "its two sides close together (interleaved where possible), and CPU per request moves less with the "
        "machine's other load than rates do. The last column is the 1-minute load average before and after "
        f"the scenario. Load generator: {info['generator']}.",
        "",
    ]
    if info.get("error"):
        lines += [f"**The run failed:** `{info['error']}`; the scenarios below are those that finished.", ""]
    earlier = sorted(
        f"`{name}` from the run at {d['run']['startedAt']} (commit `{d['run']['commit']}`)"
        if "run" in d
        else f"`{name}` from an earlier run"
        for name, d in results.items()
        if d.get("run", {}).get("startedAt") != info["startedAt"]
    )
    if earlier:
        lines += ["Not from the latest run: " + "; ".join(earlier) + ".", ""]
    rows = goal_rows(results)
    lines.append("## Issue #17's goals")
    lines.append("")
    if before is not None:
        b_info, b_results = before
        b_rows = {row["key"]: row for row in goal_rows(b_results)}
        bm = b_info["machine"]
        lines += [
            f"Before: `{b_info['command']}` at {b_info['startedAt']}, commit `{bm['commit']}`, load average at "
            f"start {bm['loadAverageAtStart']}, at end {bm.get('loadAverageAtEnd')} (its figures: "
            f"`{b_info['folder']}`).",
            "",
            "| # | goal | before | now | goal | | load |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in rows:
            b = b_rows.get(row["key"], {})
            b_text = b.get("value", "")
            if b.get("met") is not None:
                b_text += f" ({'met' if b['met'] else 'not met'})"
            lines.append(
                f"| {row['key']} | {row['what']} | {b_text} | **{row['value']}** — {row['detail']} | {row['goal']} "
                f"| {_met(row['met'])} | {_load(results.get(row['source']))} |"
            )
    else:
        lines += ["| # | goal | figure | goal | | load |", "| --- | --- | --- | --- | --- | --- |"]
        for row in rows:
            lines.append(
                f"| {row['key']} | {row['what']} | **{row['value']}** — {row['detail']} | {row['goal']} "
                f"| {_met(row['met'])} | {_load(results.get(row['source']))} |"
            )
    lines.append("")
    lines += _earlier_goals(results)
    for section in (_s1, _profile_load, _s6, _s7, _s4, _s5, _inproc_profile, _s2, _s3):
        lines += section(results)
    lines.append("Raw figures: `bench/results/*.json` (per scenario) and `run.json` (machine, config).")
    return "\n".join(lines) + "\n"


def _earlier_goals(r: dict) -> list[str]:
    """Scenarios 2 and 3 (goals of earlier issues), when the run had them (--all)."""
    rows = []
    if "s2_slow_agent" in r:
        s = r["s2_slow_agent"]["summary"]
        rows.append(
            f"| 2 | slow agent, {s['clients']} clients, {s['agentLatencyMs']} ms | {s['throughput']} msg/s "
            f"vs {s['target']}: **{s['ratio']}**; errors {s['errors']}; max DB connections per process "
            f"{s['maxDbConnectionsPerProcess']}; {s['memoryPerInFlightKiB']} KiB per in-flight request | "
            f"≥ 0.9, 0 errors, ≤ 20 | {_met(s['met'])} | {_load(r['s2_slow_agent'])} |"
        )
    if "s3_flat_cost" in r:
        d = r["s3_flat_cost"]
        s = d["summary"]
        c, e, n = d["conversation"], d["contactsExisting"], d["contactsNew"]
        rows.append(
            f"| 3 | flat cost | position {c['positions']['short'][0]} vs {c['positions']['long'][0]}: "
            f"{c['shortMedianMs']} vs {c['longMedianMs']} ms, **{c['ratio']}**; existing contact among "
            f"{e['contacts'][0]:,} vs {e['contacts'][1]:,}: {e['smallMedianMs']} vs {e['largeMedianMs']} "
            f"ms, **{e['ratio']}**; new contact: {n['smallMedianMs']} vs {n['largeMedianMs']} ms, "
            f"**{n['ratio']}** | ≤ 1.1 | {_met(s['met'])} | {_load(d)} |"
        )
    if not rows:
        return []
    return [
        "### Earlier issues' goals (scenarios 2 and 3, `--all`)",
        "",
        "| scenario | | figure | goal | | load |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]


def _s1(r: dict) -> list[str]:
    if "s1_ceiling" not in r:
        return []
    d = r["s1_ceiling"]
    lines = [
        "### Scenario 1: CPU per request, 16 and 500 in flight (goals 1 and 3)",
        "",
        "| run | in flight | rate | p50 ms | p99 ms | busy cores: machine / gunicorn / PostgreSQL (bench db) / "
        "everything else | CPU ms per request: gunicorn (of which GC) / PostgreSQL | CPU after the load | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label in d["rounds"]:
        for run_, cpu in zip(d["rounds"][label], d["cpu"][label], strict=True):
            lat = run_["latencyMs"]
            lines.append(
                f"| {label} | {d['connections'][label]} | {run_['rate']}/s | {lat.get('p50')} | {lat.get('p99')} | "
                f"{cpu['machineBusyCores']} / {cpu['gunicornCores']} / {cpu['postgresCores']} / "
                f"{cpu['everythingElseCores']} | {cpu.get('gunicornCpuMsPerRequest')} "
                f"({cpu.get('gunicornGcCpuMsPerRequest')}) / {cpu.get('postgresCpuMsPerRequest')} | "
                f"{_pct(cpu.get('drainCpuShare'))} | {run_['errors']} |"
            )
    s = d["summary"]
    lines += [
        "",
        f"{d['requestShape']}. Seconds per load: {d['secondsPerRun']}, of which ramp: {d.get('rampSeconds')}. "
        f"CPU per answered request (gunicorn + the database's backends, mean over the rounds): "
        f"{s['cpuMsPerRequest']}. Method: {d['method']}.",
        "",
    ]
    return lines


def _s6(r: dict) -> list[str]:
    if "s6_burst" not in r:
        return []
    d = r["s6_burst"]
    lines = [
        "### Scenario 6: a burst of first messages (goal 2)",
        "",
        "| round | OK | span s | span / agent | requests sent within ms | latency s: min / p50 / p90 / max | "
        "CPU ms per message: gunicorn (GC) / PostgreSQL |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, x in enumerate(d["rounds"]):
        lat, cpu = x["latencySeconds"], x["cpu"]
        lines.append(
            f"| {n + 1} | {x['ok']} {x['statuses']} | {x['spanSeconds']:.2f} | {x['ratio']} | {x['sendSpreadMs']} | "
            f"{lat['0']} / {lat['50']} / {lat['90']} / {lat['100']} | {cpu.get('gunicornCpuMsPerRequest')} "
            f"({cpu.get('gunicornGcCpuMsPerRequest')}) / {cpu.get('postgresCpuMsPerRequest')} |"
        )
    lines += ["", f"{d['requestShape']}. Method: {d['method']}.", ""]
    return lines


def _s7(r: dict) -> list[str]:
    if "s7_workspaces" not in r:
        return []
    d = r["s7_workspaces"]
    lines = [
        "### Scenario 7: one workspace vs fifty (goal 4)",
        "",
        "| load | rate (server) | in the window | generator's rate | p50 ms | p99 ms | CPU ms per message: "
        "gunicorn / PostgreSQL | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, runs in d["runs"].items():
        for x in runs:
            cpu, lat = x["cpu"], x["latencyMs"]
            lines.append(
                f"| {label} | {x['rate']}/s | {x.get('windowRate')}/s | {x['generatorRate']}/s | {lat.get('p50')} | "
                f"{lat.get('p99')} | "
                f"{cpu.get('gunicornCpuMsPerRequest')} / {cpu.get('postgresCpuMsPerRequest')} | {x['errors']} |"
            )
    lines += ["", f"Method: {d['method']}.", ""]
    return lines


def _profile_load(r: dict) -> list[str]:
    if "profile_load" not in r:
        return []
    d = r["profile_load"]
    a, b = d["profiles"]["at16"], d["profiles"]["at500"]
    lines = [
        "### Where the workers' CPU goes at 16 and at 500 in flight (goal 7)",
        "",
        f"py-spy samples: {a['samples']} at {a['connections']} in flight, {b['samples']} at {b['connections']}; "
        f"gunicorn CPU per message in those rounds {a['gunicornCpuMsPerMessage']} vs "
        f"{b['gunicornCpuMsPerMessage']} ms. Method: {d['method']}.",
        "",
        "| area (innermost frame) | share at 16 | share at 500 | ms/msg at 16 | ms/msg at 500 | growth ms/msg |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for area, growth in d["growthMsPerMessage"].items():
        lines.append(
            f"| {area} | {a['areas'].get(area, 0):.1%} | {b['areas'].get(area, 0):.1%} | "
            f"{a['areasMsPerMessage'].get(area, 0)} | {b['areasMsPerMessage'].get(area, 0)} | {growth:+g} |"
        )
    lines += [
        "",
        "| stage (inclusive) | share at 16 | share at 500 | ms/msg at 16 | ms/msg at 500 |",
        "| --- | --- | --- | --- | --- |",
    ]
    scale_a, scale_b = a["gunicornCpuMsPerMessage"] or 0, b["gunicornCpuMsPerMessage"] or 0
    for label in a["functions"]:
        sa, sb = a["functions"][label], b["functions"].get(label, 0)
        if sa or sb:
            lines.append(f"| {label} | {sa:.1%} | {sb:.1%} | {round(sa * scale_a, 2)} | {round(sb * scale_b, 2)} |")
    lines += ["", "| top frames at 500 (own time) | share at 500 | share at 16 |", "| --- | --- | --- |"]
    for frame, share in list(b["topOwn"].items())[:15]:
        lines.append(f"| `{frame}` | {share:.1%} | {a['topOwn'].get(frame, 0):.1%} |")
    lines.append("")
    return lines


def _s4(r: dict) -> list[str]:
    if "s4_queries" not in r:
        return []
    d = r["s4_queries"]
    cases = ("newContact", "existingContact", "idempotentReplay", "newContactWithKey", "existingContactWithKey")
    lines = [
        "### Scenario 4: statements per message (goal 5)",
        "",
        f"Counted in process ({d['rule']}); the statements themselves: `bench/results/s4_queries.json`.",
        "",
        "| agent | " + " | ".join(cases) + " |",
        "| --- |" + " --- |" * len(cases),
    ]
    for agent in ("openai", "builtin"):
        lines.append(f"| {agent} | " + " | ".join(str(d[agent][c]["count"]) for c in cases) + " |")
    lines.append("")
    return lines


def _s5(r: dict) -> list[str]:
    if "s5_added_latency" not in r:
        return []
    d = r["s5_added_latency"]
    return [
        "### Scenario 5: latency added at half the ceiling (goal 6)",
        "",
        f"{d['ok']} of {d['requests']} answered ({d['statuses']}), achieved {d['achievedRate']} msg/s over "
        f"{d['seconds']} s. Added latency p50 / p90 / p99 / max: {d['addedLatencyMs']['50']} / "
        f"{d['addedLatencyMs']['90']} / {d['addedLatencyMs']['99']} / {d['addedLatencyMs']['100']} ms; from the "
        f"actual send (service time) p50 / p99: {d['addedServiceTimeMs']['50']} / {d['addedServiceTimeMs']['99']} "
        f"ms. Method: {d['method']}.",
        "",
    ]


def _inproc_profile(r: dict) -> list[str]:
    if "profile" not in r:
        return []
    p = r["profile"]
    wall, cpu = p["profiles"]["wall"], p["profiles"]["cpu"]
    lines = [
        "### Profile of one message at a time (in process)",
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
            f"| {frame} | {wall['functionsCumMsPerRequest'][frame]} | {cpu['functionsCumMsPerRequest'].get(frame, 0)} |"
        )
    lines.append("")
    return lines


def _s2(r: dict) -> list[str]:
    if "s2_slow_agent" not in r:
        return []
    d = r["s2_slow_agent"]
    db = d["dbConnections"]
    return [
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


def _s3(r: dict) -> list[str]:
    if "s3_flat_cost" not in r:
        return []
    iso = r["s3_flat_cost"]["isolatedQueries"]
    lines = [
        "### Scenario 3 details: the queries alone (in-process, medians)",
        "",
        "| query | small | large | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for name, q in iso.items():
        a, b = [k for k in q if k.endswith("MedianMs")]
        lines.append(f"| {name} | {q[a]} ms | {q[b]} ms | {q['ratio']} |")
    lines += ["", r["s3_flat_cost"]["method"] + ".", ""]
    return lines
