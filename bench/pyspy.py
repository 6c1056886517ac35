"""A sampled profile of gunicorn's workers under load (issue #17: "profile first under the burst, not only
sequentially"): py-spy samples every worker from outside, `py-spy record --subprocesses --gil --nonblocking`
on the master, from the start of a load until the server has answered all of it. Scenario 1 runs it in its
last round at 16 and at 500 in flight, so the profile covers exactly the work whose CPU per message it counts.

--gil samples only the thread holding the GIL: Python running (or ready to run and waiting for a core), not a
worker waiting in its event loop nor gevent's idle native threads. --nonblocking reads the workers' memory
without stopping them, so the figures of the profiled round stay comparable with the other rounds (a sample
may now and then be torn).

Per load: each area's share of the samples (by the file of the innermost frame, bench/common.py's AREAS), the
inclusive share of the hot path's stages (FUNCTIONS) and the top frames. Multiplied by the round's gunicorn CPU
per message, the shares give milliseconds per message, so the difference between the loads says what grows.
The garbage collector runs inside whatever code allocates, so its time is smeared over the frames: scenario 1
measures it on its own (bench/gcstats.py).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

from bench.common import FUNCTIONS, PYTHON, ROOT, area_of

RATE_HZ = 100
TOP = 100  # frames kept per load (the report shows the first of them)
_LIBRARY = re.compile(r"^.*/(?:site-packages|dist-packages|lib/python3\.\d+)/")


class PySpy:
    def __init__(self, pid: int, raw: Path):
        executable = shutil.which("py-spy", path=str(Path(PYTHON).parent)) or shutil.which("py-spy")
        if executable is None:
            raise RuntimeError("py-spy is not installed: `uv sync --group bench` (make bench does)")
        self.raw = raw
        argv = [executable, "record", "--pid", str(pid), "--subprocesses", "--gil", "--nonblocking"]
        argv += ["--rate", str(RATE_HZ), "--format", "raw", "--full-filenames", "--nolineno", "--output", str(raw)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> dict:
        """Stop sampling (py-spy writes its file on SIGINT) and summarize the samples."""
        self.process.send_signal(signal.SIGINT)
        try:
            output, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        if self.process.returncode != 0 or not self.raw.exists():
            raise RuntimeError(f"py-spy failed ({self.process.returncode}): {output[-2000:]}")
        summary = summarize(self.raw.read_text())
        summary["pySpy"] = output.strip().splitlines()[-2:]
        return summary


def summarize(raw: str) -> dict:
    """py-spy's raw (collapsed) stacks: `frame;frame;...;frame count`, root first, a frame `func (file)`."""
    total = 0
    areas: dict[str, int] = {}
    leaves: dict[str, int] = {}
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
    }


def compare(profiles: dict[str, dict], cpu_ms: dict[str, float | None], method: str) -> dict:
    """The result `profile_load`: per load its shares and ms per message, and what grows between the first
    and the last load."""
    for label, profile in profiles.items():
        scale = cpu_ms.get(label) or 0
        profile["gunicornCpuMsPerMessage"] = cpu_ms.get(label)
        profile["areasMsPerMessage"] = {k: round(v * scale, 2) for k, v in profile["areas"].items()}
        profile["functionsMsPerMessage"] = {k: round(v * scale, 2) for k, v in profile["functions"].items()}
    low, high = (profiles[label] for label in (list(profiles)[0], list(profiles)[-1]))
    growth = {
        area: round(high["areasMsPerMessage"].get(area, 0) - low["areasMsPerMessage"].get(area, 0), 2)
        for area in set(low["areasMsPerMessage"]) | set(high["areasMsPerMessage"])
    }
    growth = dict(sorted(growth.items(), key=lambda kv: -kv[1]))
    return {
        "summary": {
            "samples": {label: p["samples"] for label, p in profiles.items()},
            "gunicornCpuMsPerMessage": {label: p["gunicornCpuMsPerMessage"] for label, p in profiles.items()},
            "largestGrowth": list(growth.items())[:3],
        },
        "growthMsPerMessage": growth,
        "profiles": profiles,
        "method": method,
    }


def _file(frame: str) -> str:
    return frame.rpartition(" (")[2].rstrip(")")


def _func(frame: str) -> str:
    return frame.rpartition(" (")[0]


def _short(frame: str) -> str:
    """`func (/…/site-packages/django/db/models/query.py)` -> `func (django/db/models/query.py)`."""
    path = _LIBRARY.sub("", _file(frame)).removeprefix(f"{ROOT}/")
    return f"{_func(frame)} ({path})"
