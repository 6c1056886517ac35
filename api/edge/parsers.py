"""The messages endpoint's request body: a JSON object, bounded and checked before anything else reads it.

`BoundedJSONParser` is the view's only parser and `BodyRequest` makes DRF hand it every body (DRF itself
skips the parsers when Content-Length is missing or 0, which a chunked body's is). Every failure is an
ApplicationError, so it gets the contract's error body (README "Example", which shows it).
"""

import json
import re
from itertools import accumulate

from django.conf import settings
from rest_framework.parsers import BaseParser
from rest_framework.request import Request

from config.errors import InvalidRequest, PayloadTooLarge
from config.text import ascii_digits, text_unstorable_reason

# The deepest valid body is content.<type>.<field>, three objects deep; ten leaves room for any field the
# contract adds, far below the roughly 900 levels at which the parser and the fingerprint's encoder (both
# recursive) raise RecursionError.
MAX_JSON_DEPTH = 10
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class BodyRequest(Request):
    """A DRF request whose parser always runs: DRF gives no stream (and so parses nothing and answers {})
    when Content-Length is missing or 0, but a chunked body has none, and an empty body must be refused."""

    def _load_stream(self) -> None:
        if self._request._read_started:
            super()._load_stream()
        else:
            self._stream = self._request


class BoundedJSONParser(BaseParser):
    """The body as a JSON object. Not a JSONParser subclass: DRF reads a JSONParser's body in full
    (`request.body`) before calling it, and here the size limit holds before anything is read. Selected
    for every Content-Type, so a wrong one gets the contract's error body rather than DRF's 415."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None) -> dict:
        assert parser_context is not None  # DRF's Request always passes one, with the request in it
        return _json_body(parser_context["request"])


def _body_bytes(request) -> bytes:
    """The raw body, at most the limit plus one byte. Django reads a WSGI body only up to Content-Length;
    a chunked body has none, so it is read from the server's decoded stream (gunicorn marks it
    `wsgi.input_terminated`), bounded the same way."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if not request.META.get("CONTENT_LENGTH") and request.META.get("wsgi.input_terminated"):
        return request.META["wsgi.input"].read(limit + 1)
    return request.body  # raises RequestDataTooBig (413) past the limit


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes. Send media by URL, "
        "not inline, and keep text under the documented limits.",
        details={"limitBytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE},
    )


def _nesting_exceeds(text: str, limit: int) -> bool:
    """Whether the brackets outside strings nest deeper than `limit`, counted without recursion and
    before anything recursive (the parser) reads the text; in C loops (regex, map, accumulate), so 64 KiB of
    brackets costs about 2 ms. Only valid JSON is counted exactly: in a broken text the verdict may differ
    from the parser's, and either way the body is refused."""
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0) > limit


def _unstorable_text(data: object) -> tuple[str, str] | None:
    """The first string, key or value, anywhere in the parsed body that the database could not hold
    (config/text.py), as (where, why); None when there is none. Iterative: the depth is already bounded,
    but nothing here relies on it. `where` names the field by the keys that lead to it and never repeats
    the bad string: a bad key is reported at the object that holds it ("body" at the top)."""
    pending: list[tuple[str, object]] = [("", data)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, str):
            reason = text_unstorable_reason(value)
            if reason is not None:
                return where or "body", reason
        elif isinstance(value, dict):
            for key, item in value.items():
                reason = text_unstorable_reason(key)
                if reason is not None:
                    return where or "body", f"a field name {reason}"
                pending.append((f"{where}.{key}" if where else key, item))
        elif isinstance(value, list):
            pending.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
    return None


def _json_body(request) -> dict:
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length == "0" and "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", ""):
        raise InvalidRequest(
            "The body is empty. Send a JSON object with type, contactIdentifier and content.",
            details={"body": "missing"},
        )
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise InvalidRequest(
            "Send the body as JSON with the header Content-Type: application/json.",
            details={"Content-Type": content_type or "(missing)"},
        )
    if ascii_digits(length) and int(length) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise _too_large()
    body = _body_bytes(request)
    if len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise _too_large()
    try:
        # Strictly UTF-8 (RFC 8259 section 8.1; a leading BOM is tolerated): json.loads on bytes would also
        # take UTF-16 or UTF-32 and let UTF-8-encoded surrogates through.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidRequest(
            "The body is not UTF-8 text. Send JSON encoded as UTF-8.",
            details={"body": f"not UTF-8 at byte {error.start}"},
        ) from None
    if _nesting_exceeds(text, MAX_JSON_DEPTH):
        raise InvalidRequest(
            f"The body nests objects or arrays more than {MAX_JSON_DEPTH} levels deep. "
            "Send a JSON object shaped like the documented ones.",
            details={"body": f"nested deeper than {MAX_JSON_DEPTH} levels"},
        )
    try:
        data = json.loads(text or "null")
    except ValueError as error:
        raise InvalidRequest("The body is not valid JSON. Send a JSON object.", details={"body": str(error)}) from None
    unstorable = _unstorable_text(data)
    if unstorable is not None:
        where, reason = unstorable
        raise InvalidRequest(
            f"The request has invalid fields: {where}. Send text without U+0000 (NUL) and without unpaired "
            "UTF-16 surrogates.",
            details={where: reason},
        )
    if not isinstance(data, dict):
        raise InvalidRequest(
            "The body must be a JSON object with type, contactIdentifier and content.",
            details={"body": f"got {type(data).__name__ if data is not None else 'nothing'}"},
        )
    return data
