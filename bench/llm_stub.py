"""A stand-in OpenAI-compatible chat-completions server whose latency is a parameter.

    python -m bench.llm_stub --port 18001 --latency-ms 0

`POST /v1/chat/completions` answers a valid `chat.completion` (with `usage`) after `--latency-ms`; with
`"stream": true`, the same answer as Server-Sent Events chunks spread over the latency. The
latency may also be chosen per agent by its `base_url`: `http://127.0.0.1:18001/lat/2000/v1` waits 2000 ms,
so one stub serves the 0 ms, 200 ms and 2 s agents of the benchmark at once. `GET /healthz` answers at once;
`GET /stats` with `{"chatRequests": N}`, the chat requests received so far (bench/bursts.py counts agent calls).

gevent's WSGI server with an unbounded greenlet pool: a waiting request costs a greenlet, not a thread, so
thousands of concurrent connections are fine. Loopback only.
"""

import argparse
import json
import re
import time

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402
import gevent.socket  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

_LATENCY_PATH = re.compile(r"^/lat/(\d+)(/.*)$")
_REPLY = "Thanks for your message. Orders ship within 2 business days; delivery takes 3 to 5 business days."


def make_app(default_latency_ms: int):
    received = [0]

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        latency_ms = default_latency_ms
        match = _LATENCY_PATH.match(path)
        if match:
            latency_ms, path = int(match.group(1)), match.group(2)
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"status":"ok"}']
        if path == "/stats":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"chatRequests": received[0]}).encode()]
        if environ.get("REQUEST_METHOD") != "POST" or not path.endswith("/chat/completions"):
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error":{"message":"not found","type":"invalid_request_error"}}']
        received[0] += 1
        raw = environ["wsgi.input"].read()
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            start_response("400 Bad Request", [("Content-Type", "application/json")])
            return [b'{"error":{"message":"invalid JSON","type":"invalid_request_error"}}']
        if request.get("stream"):
            return _stream(start_response, latency_ms)
        if latency_ms > 0:
            gevent.sleep(latency_ms / 1000)
        prompt_chars = sum(len(str(message.get("content", ""))) for message in request.get("messages", []))
        prompt_tokens = max(1, prompt_chars // 4)
        completion_tokens = max(1, len(_REPLY) // 4)
        body = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.get("model") or "bench-stub",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": _REPLY}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        ).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


_STREAM_PIECES = 20  # a streamed answer comes in this many pieces, spread evenly over the latency


def _stream(start_response, latency_ms: int):
    """`"stream": true`: the same answer as chat.completion.chunk events, the last with the usage."""
    words = _REPLY.split(" ")
    size = max(1, len(words) // _STREAM_PIECES)
    pieces = [" ".join(words[i : i + size]) + " " for i in range(0, len(words), size)]
    pieces[-1] = pieces[-1].rstrip()
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()), "model": "m"}

    def events():
        for piece in pieces:
            gevent.sleep(latency_ms / 1000 / len(pieces))
            chunk = {**head, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
        usage = {"prompt_tokens": 20, "completion_tokens": len(_REPLY) // 4, "total_tokens": 20 + len(_REPLY) // 4}
        yield b"data: " + json.dumps({**head, "choices": [], "usage": usage}).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    start_response("200 OK", [("Content-Type", "text/event-stream")])
    return events()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18001)
    parser.add_argument("--latency-ms", type=int, default=0, help="default latency; /lat/<ms>/v1 overrides it")
    args = parser.parse_args()
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        parser.error("the stub listens on loopback only")
    # TCP_NODELAY, as real providers' front ends set it: gevent's server writes a response's headers and body
    # separately, and without it the body waits for the client's delayed ACK of the headers (40 ms on Linux)
    # on every request of a kept-alive connection. Accepted sockets inherit the listening socket's option.
    listener = gevent.socket.socket(gevent.socket.AF_INET, gevent.socket.SOCK_STREAM)
    listener.setsockopt(gevent.socket.SOL_SOCKET, gevent.socket.SO_REUSEADDR, 1)
    listener.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
    listener.bind((args.host, args.port))
    listener.listen(4096)
    server = WSGIServer(listener, make_app(args.latency_ms), log=None)
    server.serve_forever()


if __name__ == "__main__":
    main()
