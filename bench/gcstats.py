"""The time gunicorn's workers spend in the cyclic garbage collector, for the harness: bench/run.py sets
BENCH_GC_STATS_DIR for the server it starts, bench/settings.py then installs this; production never imports it.

The collector runs inside whichever Python code happens to allocate, so a sampling profiler charges its time to
that code; `gc.callbacks` brackets each collection instead, with the thread's CPU clock. Each process writes its
running totals to DIR/gc-PID.json, at most every 0.5 s and from the callback itself (a gevent worker should not
get a thread for this): a reader may see totals up to 0.5 s old, which under load is a few collections.
"""

import gc
import json
import os
import time

_WRITE_EVERY = 0.5


class _Totals:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.pid = os.getpid()
        self.started = 0.0
        self.written = 0.0
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]


def install(directory: str) -> None:
    totals = _Totals()

    def callback(phase: str, info: dict) -> None:
        now = time.thread_time()
        if phase == "start":
            totals.started = now
            return
        if os.getpid() != totals.pid:  # a forked worker: its own totals from here on
            totals.reset()
        generation = info.get("generation", 0)
        totals.seconds[generation] += max(0.0, now - totals.started)
        totals.collections[generation] += 1
        wall = time.monotonic()
        if wall - totals.written >= _WRITE_EVERY:
            totals.written = wall
            path = os.path.join(directory, f"gc-{totals.pid}.json")
            try:
                with open(path + ".tmp", "w") as handle:
                    json.dump({"seconds": totals.seconds, "collections": totals.collections}, handle)
                os.replace(path + ".tmp", path)
            except OSError:
                pass

    gc.callbacks.append(callback)


def totals(directory: str, pids: list[int]) -> dict:
    """The processes' summed totals: CPU seconds in the collector, and collections, per generation."""
    seconds, collections = [0.0, 0.0, 0.0], [0, 0, 0]
    for pid in pids:
        try:
            with open(os.path.join(directory, f"gc-{pid}.json")) as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            continue
        seconds = [a + b for a, b in zip(seconds, data["seconds"], strict=True)]
        collections = [a + b for a, b in zip(collections, data["collections"], strict=True)]
    return {"seconds": seconds, "collections": collections}
