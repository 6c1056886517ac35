"""A lock shared by every node of one database, for work that must not run twice at once (`migrate_locked`)."""

import hashlib
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections

# How often a waiting node asks for the lock again. It asks with pg_try_advisory_lock and sleeps between
# tries rather than blocking in pg_advisory_lock: a session blocked in a statement holds a snapshot, and
# CREATE INDEX CONCURRENTLY in the holder's migration waits for every such session, which would wait for the
# holder in turn (a deadlock no timeout breaks). Idle between tries, a waiter holds nothing.
LOCK_POLL_SECONDS = 0.5


def lock_key(name: str) -> int:
    """PostgreSQL's advisory locks take a signed 64-bit key: the first 8 bytes of the name's SHA-256, so the
    same name is the same lock on every node and in every release."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def database_lock(*, name: str, using: str = "default") -> Iterator[None]:
    """Hold the advisory lock `name` on database `using` for the block; wait (without a limit) while another
    node holds it.

    The lock lives on a connection of its own, opened here and closed after the block: not on Django's
    connection, which the block may close (or, pooled, give back to the pool with the lock still held) and
    whose failures must not end the lock early. PostgreSQL releases the lock when that connection ends, so a
    node that dies inside the block frees it too."""
    import psycopg

    wrapper = connections[using]

    key = lock_key(name)
    with psycopg.connect(**wrapper.get_connection_params(), autocommit=True) as lock_connection:
        waiting = False
        while True:
            row = lock_connection.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
            if row and row[0]:
                break
            if not waiting:
                print(f"Waiting for another node to release the lock {name!r}.", file=sys.stderr, flush=True)
                waiting = True
            time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            lock_connection.execute("SELECT pg_advisory_unlock(%s)", [key])
