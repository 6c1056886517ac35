"""Scenario 4: the statements per request (in process), and the in-process profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import Bench


def s4_queries(bench: Bench) -> None:
    data = bench.inproc("queries", bench.out / ".queries.json")
    goals = data["goals"]
    summary = {}
    for agent in ("openai", "builtin"):
        for case in (
            "newContact",
            "existingContact",
            "idempotentReplay",
            "newContactWithKey",
            "existingContactWithKey",
        ):
            summary[f"{agent}.{case}"] = data[agent][case]["count"]
    met = all(data[a][c]["count"] <= goals[c] for a in ("openai", "builtin") for c in goals)
    summary["goal"] = "new <= 10, existing <= 10, replay <= 3"
    summary["met"] = met
    bench.save("s4_queries", {"summary": summary, **data})


def profile(bench: Bench) -> None:
    data = bench.inproc("profile", bench.out / ".profile.json", "--requests", str(bench.cfg["profileRequests"]))
    data["summary"] = {"wallMsPerRequest": data["wallMsPerRequest"], "cpuMsPerRequest": data["cpuMsPerRequest"]}
    bench.save("profile", data)
