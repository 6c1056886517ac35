"""A stand-in OpenAI-compatible chat-completions server on loopback, in a thread of the test's process: it
records every request and answers each with the next of a script, as one JSON completion, or with
`"stream": true` as Server-Sent Events chunks with pauses between them. A step may also hold the request
open until the test releases it (a worker killed mid-call). `/audio/transcriptions` records each upload's
form fields and answers the stand-in's `transcript`.

Raw `http.server` rather than pytest-httpserver: its handler answers one request at a time, and a held
request would hold every other one."""

import email
import email.policy
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Step:
    text: str
    pieces: list[str] | None = None  # how a streamed answer is cut (default: into words)
    pause: float = 0.0  # before each streamed piece, or before a whole answer
    hold: threading.Event | None = None  # answer only once this is set
    gate: threading.Event | None = None  # a streamed answer: the pieces after the first only once this is set
    finished: threading.Event = field(default_factory=threading.Event)  # set once the whole answer went out
    # The model calls these tools instead of answering: (name, arguments as JSON text), as OpenAI sends them.
    tool_calls: list[tuple[str, str]] | None = None
    status: int = 200  # another status: the provider fails this call (an error body)
    cut: bool = False  # a streamed answer: the connection closes after the pieces, without finish_reason or [DONE]


@dataclass
class StandIn:
    steps: deque = field(default_factory=deque)
    requests: list[dict] = field(default_factory=list)
    received: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""
    # `/audio/transcriptions`: each upload's form fields (the file as its size), answered with `transcript`.
    transcriptions: list[dict] = field(default_factory=list)
    transcript: str = "A transcription from the stand-in."

    def script(self, *steps: Step | str) -> None:
        self.steps.extend(Step(step) if isinstance(step, str) else step for step in steps)

    def wait_for_requests(self, count: int, seconds: float = 60) -> None:
        with self.received:
            assert self.received.wait_for(lambda: len(self.requests) >= count, timeout=seconds), (
                f"{len(self.requests)} requests, not {count}, within {seconds} s"
            )


def _message(step: Step) -> dict:
    if not step.tool_calls:
        return {"role": "assistant", "content": step.text}
    calls = [
        {"id": f"call_{index}", "type": "function", "function": {"name": name, "arguments": arguments}}
        for index, (name, arguments) in enumerate(step.tool_calls)
    ]
    return {"role": "assistant", "content": None, "tool_calls": calls}


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(text: str) -> dict:
    """A provider's whole chat completion answering `text` (10 prompt and 5 completion tokens), for the
    stand-ins that answer by hand (pytest-httpserver handlers)."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "stand-in",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": _usage(10, 5),
    }


def start(stand_in: StandIn) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.endswith("/audio/transcriptions"):
                self._transcribe(raw)
                return
            body = json.loads(raw or b"{}")
            with stand_in.received:
                stand_in.requests.append(body)
                stand_in.received.notify_all()
            step = stand_in.steps.popleft() if stand_in.steps else Step("Hello from the stand-in.")
            if step.hold is not None:
                step.hold.wait(120)
            if step.gate is not None and not body.get("stream"):
                step.gate.wait(60)  # a whole answer: held as a stream's rest would be
            try:
                if step.status != 200:
                    data = json.dumps({"error": {"message": "stand-in failure", "type": "server_error"}}).encode()
                    self.send_response(step.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif body.get("stream"):
                    self._stream(step)
                else:
                    time.sleep(step.pause)
                    self._whole(step)
            except OSError:
                pass  # the client went away (a killed worker)

        def _transcribe(self, raw: bytes) -> None:
            form = email.message_from_bytes(
                f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + raw, policy=email.policy.HTTP
            )
            fields = {}
            for part in form.iter_parts():
                payload = part.get_payload(decode=True)
                value = payload if isinstance(payload, bytes) else b""
                fields[part.get_param("name", header="content-disposition")] = (
                    len(value) if part.get_filename() else value.decode()
                )
            stand_in.transcriptions.append(fields)
            data = json.dumps({"text": stand_in.transcript}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _whole(self, step: Step) -> None:
            data = json.dumps(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1700000000,
                    "model": "test-model",
                    "choices": [{"index": 0, "message": _message(step), "finish_reason": "stop"}],
                    "usage": _usage(10, 5),
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            step.finished.set()

        def _stream(self, step: Step) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            pieces = step.pieces or [word + " " for word in step.text.split(" ")[:-1]] + step.text.split(" ")[-1:]
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "m"}
            first = {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
            self._event(first)
            for index, (name, arguments) in enumerate(step.tool_calls or []):
                # as OpenAI streams a call: its id and name first, then its arguments in two pieces
                call = {"index": index, "id": f"call_{index}", "type": "function", "function": {"name": name}}
                self._event({**chunk, "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
                for part in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                    delta = {"tool_calls": [{"index": index, "function": {"arguments": part}}]}
                    self._event({**chunk, "choices": [{"index": 0, "delta": delta}]})
            if step.tool_calls:
                pieces = []
            for index, piece in enumerate(pieces):
                if index == 1 and step.gate is not None:
                    step.gate.wait(60)
                time.sleep(step.pause)
                self._event({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
            if step.cut:
                self.close_connection = True
                step.finished.set()
                return
            finish = "tool_calls" if step.tool_calls else "stop"
            self._event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
            self._event({**chunk, "choices": [], "usage": _usage(10, 5)})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True
            step.finished.set()

        def _event(self, data: dict) -> None:
            self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
            self.wfile.flush()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    return server
