"""Keyset pagination for the read API's lists (README "The read API").

A cursor is the base64url of a small JSON array: the last row's sort key and its id. The next page is the
rows after that key on the list's index (an index range scan: no OFFSET, no COUNT), so the 10th page of a
long list costs what the first does, and rows inserted while a client pages neither repeat nor shift what
it has not read yet. The cursor is opaque to clients: only its round trip is part of the contract.
"""

import base64
import binascii
import json
from typing import Any

from config.errors import InvalidRequest
from config.text import ascii_digits, text_storable

LIMIT_DEFAULT = 20
LIMIT_MAX = 100  # a page is read in one indexed query and rendered at once: keep it small


def page_limit(raw: str | None) -> int:
    """The `limit` query parameter: 1 to LIMIT_MAX, LIMIT_DEFAULT when absent."""
    if raw is None or raw == "":
        return LIMIT_DEFAULT
    if not ascii_digits(raw) or not 1 <= int(raw) <= LIMIT_MAX:
        raise InvalidRequest(
            f"The limit must be a whole number from 1 to {LIMIT_MAX}. Send a smaller one or leave it out.",
            details={"limit": f"got {raw[:20]!r}"},
        )
    return int(raw)


def cursor_encode(key: list[Any]) -> str:
    text = json.dumps(key, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def cursor_decode(raw: str | None, *, shape: tuple[type, ...]) -> list[Any] | None:
    """The sort key a cursor holds, checked against `shape` (one type per element); None without a cursor.
    Anything else (not base64url, not JSON, another list's cursor) is a 400 naming `cursor`."""
    if raw is None or raw == "":
        return None
    try:
        if len(raw) > 512:
            raise ValueError("too long")
        key = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        key = None
    if (
        not isinstance(key, list)
        or len(key) != len(shape)
        or not all(
            isinstance(value, kind) and not isinstance(value, bool) for value, kind in zip(key, shape, strict=True)
        )
        or not all(text_storable(value) for value in key if isinstance(value, str))  # never sent to the database
    ):
        raise InvalidRequest(
            "The cursor is not one this list gave out. Send the nextCursor of the previous page unchanged, "
            "or leave cursor out for the first page.",
            details={"cursor": "invalid"},
        )
    return key
