"""A small gevent load generator for the messages endpoint (loopback only), printing one JSON result.

    python -m bench.loadgen open   --url http://127.0.0.1:18000 --channel CH --key KEY --rate 50 --duration 30
    python -m bench.loadgen closed --url http://127.0.0.1:18000 --channel CH --key KEY --clients 500 \
        --duration 30 --max-requests 20000
    python -m bench.loadgen burst  --url http://127.0.0.1:18000 --channel CH --key KEY --clients 200

`open`: a fixed arrival rate (open loop): request i starts at t0 + i / rate whatever the earlier ones do, so
a slow server cannot slow the arrivals down and hide its latency (no coordinated omission). Latency is
measured from the request's scheduled start. `closed`: N clients, each sending its next request when the
previous one is answered (the fallback for wrk). `burst`: N connections opened first, then one message on
each, all released at once (scenario 6: a burst of first messages). Every request carries a new contactIdentifier and
idempotency key, so no message waits for another one of its conversation. Bounded by --duration and
--max-requests (open: rate x duration requests; burst: N requests, each bounded by --timeout).
--path and --key may be comma-separated lists of the same length: request i goes to target i mod n.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402
from geventhttpclient import HTTPClient  # noqa: E402


def _message_body(prefix: str, index: int) -> bytes:
    return json.dumps(
        {
            "type": "TEXT",
            "contactIdentifier": f"{prefix}-{index}@bench.example",
            "contactName": f"Bench {index}",
            "content": {"text": {"body": "Hello! How long does shipping take to Lisbon?"}},
        }
    ).encode()


class Target:
    def __init__(self, args):
        parts = urlsplit(args.url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            sys.exit("loadgen sends traffic to loopback only")
        self.paths = (args.path or f"/api/v1/channels/{args.channel}/messages").split(",")
        self.keys = args.key.split(",")
        if len(self.paths) != len(self.keys):
            sys.exit("--path and --key lists differ in length")
        self.prefix, self.idempotency = args.prefix, not args.no_idempotency
        self.client = HTTPClient(
            parts.hostname,
            parts.port,
            concurrency=args.connections,
            connection_timeout=10,
            network_timeout=args.timeout,
        )

    def headers(self, index: int) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-API-Key": self.keys[index % len(self.keys)]}
        if self.idempotency:
            headers["X-Idempotency-Key"] = f"{self.prefix}-{index}"
        return headers

    def send(self, index: int) -> tuple[int, float]:
        headers = self.headers(index)
        path = self.paths[index % len(self.paths)]
        started = time.perf_counter()
        try:
            response = self.client.post(path, body=_message_body(self.prefix, index), headers=headers)
            response.read()
            status = response.status_code
        except Exception:  # a timeout or a reset: counted as an error, the run goes on
            status = 0
        return status, time.perf_counter() - started


def _summary(results: list[tuple[float, float, int, float, float]], started: float, ended: float) -> dict:
    """results: (scheduled offset, actual start offset, status, latency from scheduled start, service time)."""
    statuses: dict[str, int] = {}
    for _, _, status, _, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = [r for r in results if 200 <= r[2] < 300]
    return {
        "requests": len(results),
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "statuses": statuses,
        "durationSeconds": round(ended - started, 3),
        "rate": round(len(ok) / (ended - started), 2) if ended > started else 0.0,
        # per request: [scheduled start offset s, latency from scheduled start s, service time s, status]
        "samples": [[round(r[0], 4), round(r[3], 5), round(r[4], 5), r[2]] for r in results],
    }


def run_open(args) -> dict:
    target = Target(args)
    total = min(int(args.rate * args.duration), args.max_requests)
    results: list[tuple[float, float, int, float, float]] = []
    pool = Pool(args.connections * 4)

    def one(index: int, scheduled: float) -> None:
        actual = time.perf_counter() - t0
        status, service = target.send(index)
        results.append((scheduled, actual, status, time.perf_counter() - t0 - scheduled, service))

    t0 = time.perf_counter()
    for index in range(total):
        scheduled = index / args.rate
        delay = scheduled - (time.perf_counter() - t0)
        if delay > 0:
            gevent.sleep(delay)
        pool.spawn(one, index, scheduled)
    pool.join(timeout=args.timeout + 5)
    return _summary(results, t0, time.perf_counter())


def run_closed(args) -> dict:
    target = Target(args)
    results: list[tuple[float, float, int, float, float]] = []
    counter = iter(range(args.max_requests))
    t0 = time.perf_counter()
    deadline = t0 + args.duration

    def client() -> None:
        while time.perf_counter() < deadline:
            index = next(counter, None)
            if index is None:
                return
            start = time.perf_counter() - t0
            status, service = target.send(index)
            results.append((start, start, status, service, service))

    workers = [gevent.spawn(client) for _ in range(args.clients)]
    gevent.joinall(workers, timeout=args.duration + args.timeout + 5)
    return _summary(results, t0, time.perf_counter())


def run_burst(args) -> dict:
    """All connections open and idle first, then every greenlet sends its one message when the event is set:
    the server sees the burst's requests within a few milliseconds, not paced by connection set-up."""
    from gevent.event import Event

    target = Target(args)
    parts = urlsplit(args.url)
    connections = []
    for _ in range(args.clients):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=args.timeout)
        conn.connect()
        connections.append(conn)
    go = Event()
    results: list[tuple[float, float, int]] = []

    def one(index: int, conn: http.client.HTTPConnection) -> None:
        go.wait()
        sent = time.perf_counter()
        try:
            path = target.paths[index % len(target.paths)]
            conn.request("POST", path, body=_message_body(target.prefix, index), headers=target.headers(index))
            response = conn.getresponse()
            response.read()
            status = response.status
        except Exception:  # a timeout or a reset: counted as an error
            status = 0
        finally:
            conn.close()
        results.append((sent, time.perf_counter(), status))

    workers = [gevent.spawn(one, index, conn) for index, conn in enumerate(connections)]
    gevent.sleep(0.2)  # every greenlet waits on the event
    epoch, t0 = time.time(), time.perf_counter()
    go.set()
    gevent.joinall(workers, timeout=args.timeout + 5)
    statuses: dict[str, int] = {}
    for _, _, status in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    first_sent = min((r[0] for r in results), default=t0)
    return {
        "requests": args.clients,
        "answered": len(results),
        "ok": sum(1 for r in results if 200 <= r[2] < 300),
        "statuses": statuses,
        "releasedAtEpoch": epoch,
        "firstSentOffset": round(first_sent - t0, 4),
        "lastSentOffset": round(max((r[0] for r in results), default=t0) - t0, 4),
        "spanSeconds": round(max((r[1] for r in results), default=t0) - first_sent, 4),
        # per request: [sent offset s, latency s, status], offsets from the release
        "samples": [[round(r[0] - t0, 4), round(r[1] - r[0], 4), r[2]] for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["open", "closed", "burst"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--channel", default="")
    parser.add_argument("--path", default="", help="another path than the channel's messages endpoint")
    parser.add_argument("--key", default="", help="the API key (or a comma list, one per --path)")
    parser.add_argument("--prefix", default="lg")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--no-idempotency", action="store_true")
    parser.add_argument("--out", default="-")
    args = parser.parse_args()
    if args.mode in ("closed", "burst"):
        args.connections = max(args.connections, args.clients)
    result = {"open": run_open, "closed": run_closed, "burst": run_burst}[args.mode](args)
    text = json.dumps(result)
    if args.out == "-":
        print(text)
    else:
        with open(args.out, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
