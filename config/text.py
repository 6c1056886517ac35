"""Text the database can hold. PostgreSQL's text types cannot store U+0000, and a lone UTF-16 surrogate
(U+D800 to U+DFFF, which a JSON `\\ud800` escape or a percent-decoded path can produce) is not Unicode text
at all: it cannot even be encoded as UTF-8 for the driver. Either one sent to a query is a driver error, so
inputs are checked for them at the edge and refused as the client's mistake."""

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def text_unstorable_reason(value: str) -> str | None:
    """Why `value` cannot be stored or encoded, in words that never repeat the value; None when it can."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    return "contains U+0000 (NUL)" if found.group() == "\x00" else "contains an unpaired UTF-16 surrogate"


def text_storable(value: str) -> bool:
    return _UNSTORABLE.search(value) is None


def ascii_digits(value: str) -> bool:
    """Whether `value` is one or more ASCII digits, 0-9, and nothing else. Not `str.isdigit()`: that is
    true for superscripts (`²`), circled digits (`①`) and the digits of other scripts (`٣`), some of which
    `int()` then refuses (a 500) and others it reads as numbers nobody meant."""
    return value.isascii() and value.isdigit()


def human_size(size: int) -> str:
    """A byte count for people: "512 B", "12 KB", "3.0 MB"; "" for nothing. Where the exact count matters
    it goes into an error's details as well (e.g. `limitBytes`)."""
    if size <= 0:
        return ""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{round(size / 1024)} KB"
    return f"{size / (1024 * 1024):.1f} MB"
