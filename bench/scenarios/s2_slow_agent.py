"""Scenario 2: many clients while the agent is slow: connections, memory and completions."""

from __future__ import annotations

import statistics
import threading
import time
from typing import TYPE_CHECKING

import psutil
import psycopg

if TYPE_CHECKING:
    from bench.run import Bench


def s2_slow_agent(bench: Bench) -> None:
    cfg = bench.cfg
    agent_s = cfg["s2AgentMs"] / 1000
    channel = bench.fixtures["channels"][str(cfg["s2AgentMs"])]
    time.sleep(1)
    idle_rss = {pid: psutil.Process(pid).memory_info().rss for pid in bench.workers}
    samples: list[dict] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_s2, args=(bench, samples, stop), daemon=True)
    sampler.start()
    t0 = time.time()
    try:
        load = bench.closed_load(
            path=bench.messages_path(channel),
            connections=cfg["s2Clients"],
            seconds=cfg["s2Seconds"],
            prefix=f"{bench.token}s2",
            max_requests=cfg["s2MaxRequests"],
            timeout=60.0,
        )  # an integrator's patience, not wrk's 2 s default
    finally:
        t_end = time.time()
        stop.set()
        sampler.join(timeout=10)
    drained = bench.drain(timeout=180)
    ramp = agent_s + 3.0  # the first replies arrive after one agent latency; then a few seconds to settle
    window = (t0 + ramp, t0 + cfg["s2Seconds"] - 0.5)
    completed = bench.replies(channel, since=t0)
    in_window = sum(1 for t in completed if window[0] <= t < window[1])
    steady = in_window / (window[1] - window[0])
    target = max(0.1, min(cfg["s2Clients"] / agent_s, bench.s1_rate))  # 0.1: scenario 1 may have failed
    steady_samples = [s for s in samples if window[0] <= s["t"] < window[1]] or samples
    per_worker_max = {
        str(pid): max((s["workers"][pid]["dbConnections"] for s in samples if pid in s["workers"]), default=0)
        for pid in bench.workers
    }
    per_worker_pg = {
        str(pid): max((s["workers"][pid]["dbConnectionsInPg"] for s in samples if pid in s["workers"]), default=0)
        for pid in bench.workers
    }
    total_pg_max = max((s["pgConnections"] for s in samples), default=0)
    rss_load = statistics.median(sum(w["rss"] for w in s["workers"].values()) for s in steady_samples)
    rss_idle = sum(idle_rss.values())
    latency_mean_s = (load["latencyMs"]["mean"] or 0) / 1000
    # Closed loop: each client always has one request out (it sends the next as soon as it has an answer),
    # so the server holds as many requests as there are clients; Little's law is a cross-check.
    in_flight = cfg["s2Clients"]
    in_flight_little = round(steady * latency_mean_s, 1)
    mem_per = (rss_load - rss_idle) / in_flight
    ratio = steady / target
    max_conn = max([*per_worker_max.values(), *per_worker_pg.values()], default=0)
    bench.save(
        "s2_slow_agent",
        {
            "summary": {
                "clients": cfg["s2Clients"],
                "agentLatencyMs": cfg["s2AgentMs"],
                "throughput": round(steady, 1),
                "target": round(target, 1),
                "ratio": round(ratio, 3),
                "goal": "ratio >= 0.9, 0 errors, <= 20 DB connections per process",
                "errors": load["errors"],
                "maxDbConnectionsPerProcess": max_conn,
                "memoryPerInFlightKiB": round(mem_per / 1024, 1),
                "met": ratio >= 0.9 and load["errors"] == 0 and max_conn <= 20,
            },
            "load": load,
            "steadyWindowSeconds": [round(window[0] - t0, 1), round(window[1] - t0, 1)],
            "repliesInWindow": in_window,
            "loadSecondsTotal": round(t_end - t0, 1),
            "drainSeconds": drained,
            "dbConnections": {
                "perWorkerMaxSocket": per_worker_max,
                "perWorkerMaxMatchedInPgStatActivity": per_worker_pg,
                "databaseTotalMax": total_pg_max,
                "method": "every 0.5 s: (a) each gunicorn worker's established TCP sockets to "
                "PostgreSQL's port, from /proc via psutil; (b) the same sockets' local "
                "ports matched against pg_stat_activity.client_port of the benchmark "
                "database; (c) count(*) of pg_stat_activity for the database (without "
                "the sampler's own session)",
            },
            "memory": {
                "idleRssMiB": round(rss_idle / 2**20, 1),
                "loadRssMedianMiB": round(rss_load / 2**20, 1),
                "loadRssMaxMiB": round(max(sum(w["rss"] for w in s["workers"].values()) for s in samples) / 2**20, 1)
                if samples
                else None,
                "inFlight": in_flight,
                "inFlightLittlesLaw": in_flight_little,
                "method": "sum of the workers' RSS: median over the steady window minus the value just "
                "before the load, divided by the requests in flight (the clients of the closed "
                "loop; Little's law, steady throughput x mean latency of the answered ones, as a "
                "cross-check)",
            },
            "samples": [
                {
                    "t": round(s["t"] - t0, 1),
                    "pg": s["pgConnections"],
                    "workers": {
                        str(pid): [w["dbConnections"], w["dbConnectionsInPg"], round(w["rss"] / 2**20, 1)]
                        for pid, w in s["workers"].items()
                    },
                }
                for s in samples
            ],
        },
    )


def _sample_s2(bench: Bench, samples: list[dict], stop: threading.Event) -> None:
    with psycopg.connect(bench.database_url, autocommit=True) as conn:
        while not stop.is_set():
            rows = conn.execute(
                "SELECT client_port FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [bench.db_name],
            ).fetchall()
            pg_ports = {row[0] for row in rows}
            workers = {}
            for pid in bench.workers:
                try:
                    proc = psutil.Process(pid)
                    sockets = [
                        c
                        for c in proc.net_connections(kind="tcp")
                        if c.raddr and c.raddr.port == 5432 and c.status == psutil.CONN_ESTABLISHED
                    ]
                    workers[pid] = {
                        "dbConnections": len(sockets),
                        "dbConnectionsInPg": sum(1 for c in sockets if c.laddr.port in pg_ports),
                        "rss": proc.memory_info().rss,
                    }
                except psutil.Error:
                    pass
            samples.append({"t": time.time(), "pgConnections": len(rows), "workers": workers})
            stop.wait(0.5)
