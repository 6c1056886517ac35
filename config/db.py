"""Database connection handling shared by the apps: a request holds a pooled connection only while it needs
one (README "How a message is handled")."""

from django.db import connection


def connection_release() -> None:
    """Give the connection back to the pool (closing it where there is no pool), unless a caller's
    transaction is open; tests that wrap each test in a transaction keep theirs."""
    if not connection.in_atomic_block:
        connection.close()


def unreachable_database_sentence(error: Exception) -> str:
    """One sentence for a command that could not reach its database (manage.py prints it instead of a
    traceback): which server, why, and what to do."""
    from django.conf import settings

    from config import localdb

    database = settings.DATABASES["default"]
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if not settings.DATABASE_URL_SET:
        return (
            f"The project-local PostgreSQL is not running (no server on {localdb.socket_dir()}): start it with "
            "`make db` in another terminal (or use `make run`), or set DATABASE_URL to a postgres:// URL."
        )
    host = database.get("HOST") or database.get("OPTIONS", {}).get("host") or "the local socket"
    return (
        f"Cannot reach the database {database['NAME']!r} on {host} named by DATABASE_URL ({reason}): start "
        "PostgreSQL, create the database (createdb), or fix DATABASE_URL."
    )
