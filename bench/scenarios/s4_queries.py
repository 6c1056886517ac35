"""Scenario 4: the statements per message (in process), and the in-process profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import Bench

# issue #17: at most this many statements per message; an idempotency key adds at most KEY_EXTRA
GOALS = {"newContact": 8, "existingContact": 7, "idempotentReplay": 2}
KEY_EXTRA = 2
AGENTS = ("openai", "builtin")


def s4_queries(bench: Bench) -> None:
    data = bench.inproc("queries", bench.out / ".queries.json")
    summary: dict = {}
    for agent in AGENTS:
        for case in (
            "newContact",
            "existingContact",
            "idempotentReplay",
            "newContactWithKey",
            "existingContactWithKey",
        ):
            summary[f"{agent}.{case}"] = data[agent][case]["count"]
        summary[f"{agent}.keyExtra"] = max(
            data[agent]["newContactWithKey"]["count"] - data[agent]["newContact"]["count"],
            data[agent]["existingContactWithKey"]["count"] - data[agent]["existingContact"]["count"],
        )
    met = all(summary[f"{a}.{c}"] <= goal for a in AGENTS for c, goal in GOALS.items()) and all(
        summary[f"{a}.keyExtra"] <= KEY_EXTRA for a in AGENTS
    )
    summary["goal"] = (
        f"new <= {GOALS['newContact']}, existing <= {GOALS['existingContact']}, replay <= "
        f"{GOALS['idempotentReplay']}, an idempotency key at most {KEY_EXTRA} more"
    )
    summary["met"] = met
    bench.save("s4_queries", {"summary": summary, **data})


def profile(bench: Bench) -> None:
    data = bench.inproc("profile", bench.out / ".profile.json", "--requests", str(bench.cfg["profileRequests"]))
    data["summary"] = {"wallMsPerRequest": data["wallMsPerRequest"], "cpuMsPerRequest": data["cpuMsPerRequest"]}
    bench.save("profile", data)
