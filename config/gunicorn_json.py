"""gunicorn's own answers and log lines in the application's formats (config/gunicorn.py uses both classes).

gunicorn answers a request it cannot parse (a bad Content-Length, a folded header, a NUL in a header, a
request line too long, ...) itself, before Django sees it, with an HTML page; and it logs its own lines
(start, workers, those refused requests, the access log) as plain text. Here the page becomes the contract's
JSON error body, with gunicorn's status code, and its lines become the same JSON lines as the application's
(config/logs.py, rendered the same way, redacted the same way).

What stays gunicorn's: which requests are malformed and the status each gets (400, or 414 for a request line
too long, 431 for too many or too large headers, 501 for an unsupported transfer coding, 403 for a proxy
header from an untrusted address), and the connection is closed after the answer.
"""

import json
import os

from gunicorn import glogging, util
from gunicorn.workers.ggevent import GeventWorker

from config.errors import ApplicationError
from config.logs import formatter

# What was wrong, by gunicorn's exception class (gunicorn/http/errors.py), in the words of an error message.
_PROBLEMS = {
    "InvalidRequestLine": "its request line is malformed",
    "InvalidRequestMethod": "its method is not a valid HTTP method",
    "InvalidHTTPVersion": "its HTTP version is not supported",
    "InvalidHeader": (
        "a header is malformed (for example an invalid or repeated Content-Length, a bad Transfer-Encoding, "
        "a control character such as NUL in a value, or a bare LF)"
    ),
    "InvalidHeaderName": "a header name has characters a header name may not have",
    "ObsoleteFolding": "a header is folded over several lines (obsolete line folding)",
    "LimitRequestLine": "its request line is too long",
    "LimitRequestHeaders": "it has too many headers, or a header is too large",
    "UnsupportedTransferCoding": "its Transfer-Encoding is not supported (send chunked or a Content-Length)",
    "InvalidChunkSize": "its chunked body is malformed",
    "ChunkMissingTerminator": "its chunked body is malformed",
    "InvalidChunkExtension": "its chunked body is malformed",
    "ExpectationFailed": "its Expect header cannot be met (send no Expect header, or 100-continue)",
    "InvalidSchemeHeaders": "its scheme headers contradict each other",
    "InvalidProxyLine": "its PROXY protocol line is malformed",
    "ForbiddenProxyRequest": "it sent a PROXY line from an address that may not",
}


class _ErrorPage:
    """Takes the place of the client's socket while gunicorn writes its error page, to keep the page's
    status line (gunicorn's choice of status) and drop the HTML."""

    def __init__(self, sock):
        self._sock = sock
        self.written = b""

    def gettimeout(self) -> float:
        return 0.0  # "non-blocking already": gunicorn then writes without switching the socket's mode

    def sendall(self, data: bytes) -> None:
        self.written += data

    def __getattr__(self, name):  # anything else gunicorn reads (the address, for its access log line)
        return getattr(self._sock, name)


def error_answer(*, status: int, reason: str, exc: BaseException) -> bytes:
    """The HTTP response for a request gunicorn refused: its status, the contract's JSON error body."""
    if status >= 500 and status != 501:
        error = ApplicationError()
        code, message, details = error.code, error.message, {}
    else:
        name = type(exc).__name__
        problem = _PROBLEMS.get(name, "it is malformed")
        code = "invalid_request"
        message = f"The server could not read this HTTP request: {problem}. Send a well-formed HTTP/1.1 request."
        details = {"http": name}
    body = json.dumps(
        {"success": False, "error": {"code": code, "message": message, "details": details}},
        separators=(",", ":"),
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


class JsonErrorsGeventWorker(GeventWorker):
    """gunicorn's gevent worker, answering the requests gunicorn itself refuses with a JSON error body."""

    def handle_error(self, req, client, addr, exc):
        page = _ErrorPage(client)
        super().handle_error(req, page, addr, exc)  # gunicorn's log lines, access log and status
        status_line = page.written.split(b"\r\n", 1)[0].decode("latin-1")  # "HTTP/1.1 400 Bad Request"
        try:
            _, status, reason = status_line.split(" ", 2)
            answer = error_answer(status=int(status), reason=reason, exc=exc)
        except ValueError:  # no page was written (gunicorn could not), or one we cannot read: send it as it is
            answer = page.written
        if not answer:
            return
        try:
            util.write_nonblock(client, answer)
        except Exception:
            self.log.debug("Failed to send error message.")


class JsonLogger(glogging.Logger):
    """gunicorn's logger, its lines (error log and access log) rendered as the application's JSON lines."""

    def setup(self, cfg):
        super().setup(cfg)
        line_formatter = formatter(os.environ.get("LOG_FORMAT", "json"))
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(line_formatter)
