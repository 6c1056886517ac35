"""Which contact a `contactIdentifier` names (README "Request body"): the identifier's normalised key.

- trimmed;
- shaped like an e-mail address (one `@`, something on each side, a dot in the domain, no whitespace):
  compared case-insensitively, so `Jane@Example.com` and `jane@example.com` are one contact;
- a `+` followed by digits, spaces, dots, dashes or parentheses (a phone number as people write it): compared
  by the `+` and its digits, so `+1 (555) 010-0` is `+15550100`;
- anything else: exact, after trimming (`@handle` and `a@b@c` are not e-mail addresses).

The key is a fixed point (`identifier_key(identifier_key(x)) == identifier_key(x)`) and the three shapes
never produce each other's keys, so one unique constraint on the key settles every spelling. No imports
from the apps: the data migration contacts/migrations/0002 uses this module as it is.
"""

import re

# One "@" with text on both sides and a dotted domain; no whitespace anywhere. Deliberately loose: it decides
# only whether case is ignored, never whether an identifier is accepted.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")
# "+" then ASCII digits and the separators people type; at least one digit. [0-9], not \d: \d also matches
# other scripts' digits, which a phone number written that way would keep apart from its ASCII spelling.
_PHONE = re.compile(r"\+[0-9 .()\-]*[0-9][0-9 .()\-]*")
_NOT_DIGIT = re.compile(r"[^0-9]")

# A key can be longer than the identifier: lower() turns some characters into two ("\u0130" -> "i\u0307").
KEY_MAX_LENGTH = 640


def identifier_key(identifier: str) -> str:
    """The normalised key of a contact identifier (see the module's docstring)."""
    value = identifier.strip()
    if _PHONE.fullmatch(value):
        return "+" + _NOT_DIGIT.sub("", value)
    if _EMAIL.fullmatch(value):
        return value.lower()
    return value
