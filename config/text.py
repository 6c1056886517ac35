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
