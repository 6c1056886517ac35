"""PostgreSQL 15 is the oldest server we support (README "Configuration"): an older one is refused when a
connection is made, before any statement of ours runs (config/postgresql/base.py)."""

import pytest
from django.db import NotSupportedError, connection


def test_a_server_older_than_postgresql_15_is_refused(monkeypatch):
    monkeypatch.setattr(connection, "get_database_version", lambda: (14, 12))

    with pytest.raises(NotSupportedError, match=r"PostgreSQL 15 or later is required \(found 14\.12\)"):
        connection.check_database_version_supported()


def test_postgresql_15_is_accepted(monkeypatch):
    monkeypatch.setattr(connection, "get_database_version", lambda: (15, 0))

    connection.check_database_version_supported()
