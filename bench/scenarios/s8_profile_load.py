"""Scenario 8: where gunicorn's workers spend their CPU at 16 and at 500 requests in flight (issue #17:
"profile first under the burst, not only sequentially"), with py-spy sampling every worker from outside
(`py-spy record --subprocesses --gil` on the master: Python running, not waiting), while a closed loop of 0 ms messages
runs like scenario 1's.

Per load: each area's share of the samples (by the file of the innermost frame, bench/common.py's AREAS),
the inclusive share of the hot path's stages (FUNCTIONS), and the top frames. Scaled by scenario 1's gunicorn
CPU per message at the same concurrency (same run, without the profiler), the shares give milliseconds per
message, so the difference between the two loads says what grows. The garbage collector runs inside whatever
code allocates, so its time is smeared over the frames: scenario 1 measures it on its own (bench/gcstats.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import FUNCTIONS, PYTHON, ROOT, area_of

if TYPE_CHECKING:
    from bench.run import Bench

RATE_HZ = 100
TOP = 25
_LIBRARY = re.compile(r"^.*/(?:site-packages|dist-packages|lib/python3\.\d+)/")


def s8_profile_load(bench: Bench) -> None:
    cfg = bench.cfg
    py_spy = shutil.which("py-spy", path=str(Path(PYTHON).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("py-spy is not installed: `uv sync --group bench` (make bench does)")
    channel = bench.fixtures["channels"]["0"]
    s1 = bench.results.get("s1_ceiling", {}).get("summary", {}).get("gunicornCpuMsPerRequest", {})
    loads = {
        "at16": (cfg["s1Connections"], s1.get("messages")),
        "at500": (cfg["inFlightHigh"], s1.get("messagesAt500")),
    }
    seconds = cfg["profileLoadSeconds"]
    meter = bench.cpu_meter()
    profiles = {}
    for label, (connections, s1_cpu_ms) in loads.items():
        ramp = cfg["inFlightRamp"] if connections == cfg["inFlightHigh"] else cfg["s1Ramp"]
        raw = bench.logs / f"py-spy-{label}.txt"
        result: dict = {}

        def load(connections: int = connections, label: str = label, result: dict = result, ramp: int = ramp) -> None:
            result["load"] = bench.closed_load(
                path=bench.messages_path(channel),
                connections=connections,
                seconds=ramp + seconds + 1,
                prefix=f"{bench.token}s8-{label}",
                max_requests=200_000,
                timeout=60,
            )

        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        time.sleep(ramp)  # the loop at its concurrency, every worker busy
        meter.start()
        t0 = time.time()
        spy = subprocess.run(
            [
                py_spy,
                "record",
                "--pid",
                str(bench.web.pid),
                "--subprocesses",
                "--duration",
                str(seconds),
                "--rate",
                str(RATE_HZ),
                "--format",
                "raw",
                "--full-filenames",
                "--nolineno",
                "--gil",  # only the thread holding the GIL: CPU, not a worker's idle native threads
                "--output",
                str(raw),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        t1 = time.time()
        thread.join(timeout=ramp + seconds + 120)
        bench.drain(timeout=120)
        answered = sum(1 for t in bench.replies(channel, since=t0) if t < t1)
        cpu = meter.stop(completed=answered)
        if spy.returncode != 0 or not raw.exists():
            raise RuntimeError(f"py-spy failed ({spy.returncode}): {spy.stderr[-2000:]}")
        summary = summarize(raw.read_text())
        own_cpu_ms = cpu.get("gunicornCpuMsPerRequest")
        scale = s1_cpu_ms or own_cpu_ms  # scenario 1's figure: same concurrency, no profiler attached
        summary.update(
            {
                "connections": connections,
                "profiledSeconds": round(t1 - t0, 1),
                "answeredWhileProfiled": answered,
                "cpuWhileProfiled": cpu,
                "gunicornCpuMsPerMessage": scale,
                "scaledBy": "scenario 1 (same concurrency, no profiler)" if s1_cpu_ms else "this window's own",
                "areasMsPerMessage": {k: round(v * scale, 2) for k, v in summary["areas"].items()} if scale else {},
                "load": result.get("load"),
                "pySpyStderr": spy.stderr.strip().splitlines()[-3:],
            }
        )
        profiles[label] = summary
    a, b = profiles["at16"], profiles["at500"]
    growth = {
        area: round(b["areasMsPerMessage"].get(area, 0) - a["areasMsPerMessage"].get(area, 0), 2)
        for area in set(a["areasMsPerMessage"]) | set(b["areasMsPerMessage"])
    }
    growth = dict(sorted(growth.items(), key=lambda kv: -kv[1]))
    bench.save(
        "s8_profile_load",
        {
            "summary": {
                "samples": {label: p["samples"] for label, p in profiles.items()},
                "gunicornCpuMsPerMessage": {label: p["gunicornCpuMsPerMessage"] for label, p in profiles.items()},
                "largestGrowth": list(growth.items())[:3],
            },
            "growthMsPerMessage": growth,
            "profiles": profiles,
            "method": f"py-spy record --subprocesses on gunicorn's master at {RATE_HZ} Hz for {seconds} s, "
            "after scenario 1's ramp into a closed loop of 0 ms messages (OpenAI-compatible stub) at each "
            "concurrency; only the thread holding the GIL is sampled (--gil), so a worker waiting in its event "
            "loop and gevent's idle native threads are not; area = file of the innermost frame; ms per message "
            "= share x gunicorn CPU per message",
        },
    )


def summarize(raw: str) -> dict:
    """py-spy's raw (collapsed) stacks: `frame;frame;...;frame count`, root first, a frame `func (file)`."""
    total = 0
    areas: dict[str, int] = {}
    leaves: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    functions: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        areas[area_of(_file(leaf))] = areas.get(area_of(_file(leaf)), 0) + count
        leaves[_short(leaf)] = leaves.get(_short(leaf), 0) + count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] = inclusive.get(frame, 0) + count
        for label, needle, name in FUNCTIONS:
            if any(_func(f) == name and needle in _file(f) for f in frames):
                functions[label] = functions.get(label, 0) + count

    def shares(counts: dict[str, int], top: int | None = None) -> dict[str, float]:
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return {k: round(v / total, 4) for k, v in ordered} if total else {}

    return {
        "samples": total,
        "areas": shares(areas),
        "functions": {label: round(functions.get(label, 0) / total, 4) if total else 0 for label, _, _ in FUNCTIONS},
        "topOwn": shares(leaves, TOP),
        "topInclusive": shares(inclusive, TOP * 2),
    }


def _file(frame: str) -> str:
    return frame.rpartition(" (")[2].rstrip(")")


def _func(frame: str) -> str:
    return frame.rpartition(" (")[0]


def _short(frame: str) -> str:
    """`func (/…/site-packages/django/db/models/query.py)` -> `func (django/db/models/query.py)`."""
    path = _LIBRARY.sub("", _file(frame)).removeprefix(f"{ROOT}/")
    return f"{_func(frame)} ({path})"
