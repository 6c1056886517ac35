"""Database connection handling shared by the apps: a request holds a pooled connection only while it needs
one (README "How a message is handled")."""

from django.db import connection


def connection_release() -> None:
    """Give the connection back to the pool (closing it where there is no pool), unless a caller's
    transaction is open; tests that wrap each test in a transaction keep theirs."""
    if not connection.in_atomic_block:
        connection.close()
