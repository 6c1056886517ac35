"""In-process measurements against the benchmark's database, through Django's test client (the whole
middleware and view stack, no HTTP server): statements per message (scenario 4), a cProfile of the hot path,
and the flat-cost queries timed on their own (scenario 3's isolated view).

    DATABASE_URL=... python -m bench.inproc queries --fixtures F --out bench/results/queries.json
    DATABASE_URL=... python -m bench.inproc profile --fixtures F --requests 300 --out bench/results/profile.json
    DATABASE_URL=... python -m bench.inproc flatsql --fixtures F --requests 200 --out ...

Statements are counted like the `assert_statements` fixture of tests/conftest.py: everything except
BEGIN / COMMIT / ROLLBACK / SAVEPOINT / RELEASE SAVEPOINT.
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import statistics
import time
import uuid
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from bench.common import FUNCTIONS, area_of  # noqa: E402

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


def _body(identifier: str, text: str = "Hello! How long does shipping take to Lisbon?") -> str:
    return json.dumps(
        {"type": "TEXT", "contactIdentifier": identifier, "contactName": "Bench", "content": {"text": {"body": text}}}
    )


class Poster:
    def __init__(self, *, key: str, channel: str):
        self.client, self.key, self.channel = Client(), key, channel

    def post(self, body: str, idempotency_key: str | None = None):
        headers: dict[str, Any] = {"HTTP_X_API_KEY": self.key}
        if idempotency_key is not None:
            headers["HTTP_X_IDEMPOTENCY_KEY"] = idempotency_key
        response = self.client.post(
            f"/api/v1/channels/{self.channel}/messages", data=body, content_type="application/json", **headers
        )
        assert response.status_code == 200, (response.status_code, response.content[:300])
        return response


def statements(poster: Poster, body: str, idempotency_key: str | None = None) -> list[str]:
    with CaptureQueriesContext(connection) as context:
        poster.post(body, idempotency_key)
    return [q["sql"] for q in context.captured_queries if not q["sql"].lstrip().upper().startswith(TRANSACTION_CONTROL)]


def count_cases(poster: Poster) -> dict:
    tag = uuid.uuid4().hex[:8]
    poster.post(_body(f"warm-{tag}@bench.example"))  # the key's last-used stamp, the agent's caches
    cases: dict[str, list[str]] = {}
    cases["newContact"] = statements(poster, _body(f"new-{tag}@bench.example"))
    cases["existingContact"] = statements(poster, _body(f"new-{tag}@bench.example", "And to Porto?"))
    cases["newContactWithKey"] = statements(poster, _body(f"newk-{tag}@bench.example"), f"k1-{tag}")
    cases["existingContactWithKey"] = statements(
        poster, _body(f"newk-{tag}@bench.example", "And to Porto?"), f"k2-{tag}"
    )
    cases["idempotentReplay"] = statements(poster, _body(f"newk-{tag}@bench.example", "And to Porto?"), f"k2-{tag}")
    return {name: {"count": len(sql), "statements": [s[:200] for s in sql]} for name, sql in cases.items()}


def cmd_queries(args, fixtures: dict) -> dict:
    openai_channel = fixtures["channels"]["0"]
    return {
        "rule": "all statements but BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE SAVEPOINT (tests/conftest.py)",
        "openai": count_cases(Poster(key=fixtures["apiKey"], channel=openai_channel)),
        "builtin": count_cases(Poster(key=fixtures["apiKey"], channel=fixtures["builtinChannel"])),
    }


def cmd_profile(args, fixtures: dict) -> dict:
    poster = Poster(key=fixtures["apiKey"], channel=fixtures["channels"]["0"])
    tag = uuid.uuid4().hex[:8]
    for n in range(30):  # warm-up: imports, pools, the SDK client, caches
        poster.post(_body(f"pw-{tag}-{n}@bench.example"), f"pw-{tag}-{n}")
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(args.requests):  # without the profiler: the real cost of a message in this process
        poster.post(_body(f"pu-{tag}-{n}@bench.example"), f"pu-{tag}-{n}")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    bare, bare_client = time.process_time(), Client()
    for _ in range(args.requests):  # the reference: the bare DRF view through the same stack
        assert bare_client.post("/api/bench/bare", data="{}", content_type="application/json").status_code == 200
    bare = time.process_time() - bare
    profiles = {}
    for timer_name, timer in (("wall", time.perf_counter), ("cpu", time.process_time)):
        # "wall" shows where a message waits (PostgreSQL, the stub); "cpu" where this process burns CPU,
        # which is what limits a CPU-bound gunicorn worker.
        profiler = cProfile.Profile(timer)
        profiler.enable()
        for n in range(args.requests):
            poster.post(_body(f"p{timer_name}-{tag}-{n}@bench.example"), f"p{timer_name}-{tag}-{n}")
        profiler.disable()
        profiles[timer_name] = _profile_summary(profiler, args.requests)
    return {
        "requests": args.requests,
        "wallMsPerRequest": round(wall / args.requests * 1000, 3),
        "cpuMsPerRequest": round(cpu / args.requests * 1000, 3),
        "bareViewCpuMsPerRequest": round(bare / args.requests * 1000, 3),
        "profiles": profiles,
        "note": "cProfile adds its own overhead to every Python call; read the areas as shares, not absolutes",
    }


def _profile_summary(profiler: cProfile.Profile, requests: int) -> dict:
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    areas: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        label = area_of(filename)
        areas[label] = areas.get(label, 0.0) + tottime
    functions = {}
    for label, needle, name in FUNCTIONS:
        cum = sum(
            row[3]
            for (filename, _, func), row in stats.stats.items()  # type: ignore[attr-defined]
            if needle in filename and func == name
        )
        functions[label] = round(cum / requests * 1000, 3)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
    cum_text = io.StringIO()
    pstats.Stats(profiler, stream=cum_text).sort_stats("cumulative").print_stats(45)
    return {
        "profiledMsPerRequest": round(total / requests * 1000, 3),
        "areasMsPerRequest": {
            k: round(v / requests * 1000, 3) for k, v in sorted(areas.items(), key=lambda kv: -kv[1])
        },
        "functionsCumMsPerRequest": functions,
        "topByTottime": text.getvalue().splitlines()[:60],
        "topByCumulative": cum_text.getvalue().splitlines()[:70],
    }


def _timed(fn, *a, **kw) -> float:
    started = time.perf_counter()
    fn(*a, **kw)
    return time.perf_counter() - started


def cmd_flatsql(args, fixtures: dict) -> dict:
    """The two queries whose cost could grow with the data, timed alone, A and B interleaved."""
    from conversations.selectors import contact_with_active_conversation, history_window

    flat = fixtures["flat"]
    rng = random.Random(8)
    sets = flat["contactSets"]
    result: dict = {}
    samples: dict[str, list[float]] = {"small": [], "large": []}
    channel_of = {label: sets[label]["channelId"] for label in sets}
    for round_ in range(args.warmup + args.requests):
        for label in ("small", "large"):
            n = rng.randint(1, sets[label]["contacts"])
            seconds = _timed(
                contact_with_active_conversation,
                workspace_id=sets[label]["workspaceId"],
                channel_id=channel_of[label],
                identifier_key=f"c{n}@bench.example",
            )
            if round_ >= args.warmup:
                samples[label].append(seconds)
    result["contactLookupExisting"] = _pair(samples, "small", "large")
    samples = {"small": [], "large": []}
    for round_ in range(args.warmup + args.requests):
        for label in ("small", "large"):
            seconds = _timed(
                contact_with_active_conversation,
                workspace_id=sets[label]["workspaceId"],
                channel_id=channel_of[label],
                identifier_key=f"absent-{round_}@bench.example",
            )
            if round_ >= args.warmup:
                samples[label].append(seconds)
    result["contactLookupMissing"] = _pair(samples, "small", "large")
    with connection.cursor() as cursor:
        conv = {}
        for label in ("short", "long"):
            cursor.execute(
                "SELECT last_seq FROM conversations_conversation WHERE id = %s",
                [flat["conversations"][label]["conversationId"]],
            )
            conv[label] = (flat["conversations"][label]["conversationId"], cursor.fetchone()[0])
    samples = {"short": [], "long": []}
    for round_ in range(args.warmup + args.requests):
        for label in ("short", "long"):
            conversation_id, seq = conv[label]
            seconds = _timed(history_window, conversation_id=conversation_id, seq=seq, limit=21)
            if round_ >= args.warmup:
                samples[label].append(seconds)
    result["historyWindow"] = _pair(samples, "short", "long")
    connection.close()
    return result


def _pair(samples: dict[str, list[float]], a: str, b: str) -> dict:
    med = {label: statistics.median(values) * 1000 for label, values in samples.items()}
    return {
        f"{a}MedianMs": round(med[a], 4),
        f"{b}MedianMs": round(med[b], 4),
        "ratio": round(med[b] / med[a], 3),
        "samples": len(samples[a]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["queries", "profile", "flatsql"])
    parser.add_argument("--fixtures", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    with open(args.fixtures) as handle:
        fixtures = json.load(handle)
    command = {"queries": cmd_queries, "profile": cmd_profile, "flatsql": cmd_flatsql}[args.command]
    result = command(args, fixtures)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
