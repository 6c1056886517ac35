"""Scenario 3: a request's cost stays flat as the data grows."""

from __future__ import annotations

import json
import statistics
import time
from http.client import HTTPConnection
from typing import TYPE_CHECKING

from bench.common import (
    HOST,
    PYTHON,
    percentile,
    run,
)

if TYPE_CHECKING:
    from bench.run import Bench


def s3_flat_cost(bench: Bench) -> None:
    cfg = bench.cfg
    started = time.monotonic()
    run(
        [
            PYTHON,
            "-m",
            "bench.fixtures",
            "flat",
            "--in",
            str(bench.fixtures_path),
            "--out",
            str(bench.fixtures_path),
            "--short",
            str(cfg["s3Short"]),
            "--long",
            str(cfg["s3Long"]),
            "--contacts-small",
            str(cfg["s3ContactsSmall"]),
            "--contacts-large",
            str(cfg["s3ContactsLarge"]),
        ],
        bench.env,
        timeout=1800,
        log=bench.logs / "fixtures-flat.log",
    )
    bench.fixtures = json.loads(bench.fixtures_path.read_text())
    flat = bench.fixtures["flat"]
    fill_seconds = round(time.monotonic() - started, 1)
    n, warm = cfg["s3Requests"], cfg["s3Warmup"]
    conns: dict[str, HTTPConnection] = {}

    def timed(label: str, channel: str, identifier: str, key: str | None, idem: str) -> float:
        conn = conns.setdefault(label, HTTPConnection(HOST, bench.web_port, timeout=60))
        try:
            status, body, seconds = bench.post(channel, identifier, key=key, idempotency_key=idem, conn=conn)
        except (OSError, ConnectionError):  # the server closed an idle keep-alive connection: once more
            conns[label] = conn = HTTPConnection(HOST, bench.web_port, timeout=60)
            status, body, seconds = bench.post(channel, identifier, key=key, idempotency_key=idem, conn=conn)
        if status != 200:
            raise RuntimeError(f"scenario 3 {label}: {status} {body[:300]!r}")
        return seconds

    # the same conversation, at position `short` and `long`, interleaved
    channel = flat["channelId"]
    conv = flat["conversations"]
    position: dict[str, list[float]] = {"short": [], "long": []}
    for i in range(warm + n):
        for label in ("short", "long"):
            seconds = timed(label, channel, conv[label]["contactIdentifier"], None, f"s3c-{label}-{i}")
            if i >= warm:
                position[label].append(seconds * 1000)
    # contact resolution: an existing contact (random, each once) and a new one, 1,000 vs 1,000,000 contacts
    import random

    rng = random.Random(3)
    sets = flat["contactSets"]
    picks = {
        label: rng.sample(range(1, sets[label]["contacts"] + 1), min(warm + n, sets[label]["contacts"]))
        for label in ("small", "large")
    }
    existing: dict[str, list[float]] = {"small": [], "large": []}
    new: dict[str, list[float]] = {"small": [], "large": []}
    for i in range(warm + n):
        for label in ("small", "large"):
            s = sets[label]
            seconds = timed(
                f"c-{label}", s["channelId"], f"c{picks[label][i]}@bench.example", s["apiKey"], f"s3e-{label}-{i}"
            )
            if i >= warm:
                existing[label].append(seconds * 1000)
            seconds = timed(
                f"c-{label}", s["channelId"], f"s3new-{label}-{i}@bench.example", s["apiKey"], f"s3n-{label}-{i}"
            )
            if i >= warm:
                new[label].append(seconds * 1000)
    for conn in conns.values():
        conn.close()
    isolated = bench.inproc("flatsql", bench.out / ".flatsql.json", "--requests", str(n), "--warmup", str(warm))

    def pair(samples: dict[str, list[float]], a: str, b: str) -> dict:
        ma, mb = statistics.median(samples[a]), statistics.median(samples[b])
        return {
            f"{a}MedianMs": round(ma, 2),
            f"{b}MedianMs": round(mb, 2),
            "ratio": round(mb / ma, 3),
            f"{a}P90Ms": round(percentile(samples[a], 90), 2),
            f"{b}P90Ms": round(percentile(samples[b], 90), 2),
            "samples": len(samples[a]),
        }

    conversation = pair(position, "short", "long")
    contacts_existing = pair(existing, "small", "large")
    contacts_new = pair(new, "small", "large")
    ratios = [conversation["ratio"], contacts_existing["ratio"], contacts_new["ratio"]]
    bench.save(
        "s3_flat_cost",
        {
            "summary": {
                "conversationPositionRatio": conversation["ratio"],
                "contactExistingRatio": contacts_existing["ratio"],
                "contactNewRatio": contacts_new["ratio"],
                "goal": "each ratio <= 1.1",
                "met": all(r <= 1.1 for r in ratios),
            },
            "conversation": {
                **conversation,
                "positions": {
                    "short": [cfg["s3Short"], cfg["s3Short"] + 2 * (warm + n) - 2],
                    "long": [cfg["s3Long"], cfg["s3Long"] + 2 * (warm + n) - 2],
                },
                "note": "each request adds the message and its reply, so the position moves by 2 per request",
            },
            "contactsExisting": {
                **contacts_existing,
                "contacts": [cfg["s3ContactsSmall"], cfg["s3ContactsLarge"]],
                "note": "a random existing contact per request (each once): lookup hit plus a new conversation",
            },
            "contactsNew": {**contacts_new, "note": "a new contact per request: lookup miss plus insert"},
            "isolatedQueries": isolated,
            "method": f"sequential requests over one keep-alive connection each, the two sides interleaved, "
            f"{warm} warm-up rounds, medians of {n}; 0 ms agent",
            "fillSeconds": fill_seconds,
            "fixtureTimings": flat["timings"],
        },
    )
