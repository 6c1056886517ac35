"""Opaque, time-ordered public ids: a type prefix and a ULID (48-bit ms time + 80 random bits, Crockford base32).

Time order keeps B-tree inserts at the right edge of the index; randomness keeps ids unguessable, so an id
never tells another workspace how many rows exist.
"""

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid().lower()}"


# Field defaults: module-level functions, so migrations can reference them.


WORKSPACE_ID_PREFIX = "ws"


def workspace_id() -> str:
    return new_id(WORKSPACE_ID_PREFIX)


def channel_id() -> str:
    return new_id("ch")


def team_id() -> str:
    return new_id("team")


def agent_id() -> str:
    return new_id("ag")


def knowledge_id() -> str:
    return new_id("kn")


def contact_id() -> str:
    return new_id("ct")


def conversation_id() -> str:
    return new_id("cv")


def message_id() -> str:
    return new_id("msg")


def ledger_id() -> str:
    return new_id("led")


def idempotency_id() -> str:
    return new_id("idm")


def media_id() -> str:
    return new_id("ma")


def tool_id() -> str:
    return new_id("tl")


def tool_call_id() -> str:
    return new_id("tc")
