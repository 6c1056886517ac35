"""Django's PostgreSQL backend with one change: a pooled connection is checked before it is handed out.

Why: a connection waits in the psycopg pool between requests. When PostgreSQL restarts (or a backend is
terminated, or a proxy drops an idle connection), every idle connection in the pool is dead, and the pool
only notices when it is used: without a check, each of them fails one request with 500, for as long as
they sit in the pool (minutes on an idle node). With the check, a dead connection costs no request.

Not Django's `CONN_HEALTH_CHECKS` (which hands the pool psycopg's `check_connection`): on a failed check
the pool backs off (1 s, 2 s, 4 s, ...) before it tries the next idle connection, which after a restart is
dead too, so the first requests wait several seconds and some run into `DB_POOL_TIMEOUT`. Here one dead
connection makes the pool check all its idle connections at once (`ConnectionPool.check()`: each dead one
fails at once, with no waiting) and the request takes a fresh one, so a restart costs only the requests
that were inside a statement when it happened (answered 503 `database_unavailable`, config/exception_handler.py).

The check is an empty query (a round trip) only for a connection that sat in the pool longer than
`IDLE_CHECK_SECONDS`. A busy pool hands each connection out again within milliseconds, a message takes one
three or four times, and a round trip each was CPU on both sides of the socket for nothing; so a connection
back from its last request within that time is checked without a round trip: the socket must have nothing
to read. An idle connection has nothing to say, while a server that restarts or terminates the backend
sends its FATAL error and closes the socket (a proxy dropping the connection closes it too), which makes
the socket readable; then the full check runs, fails, and replaces it as above.
"""

import select
import time

import psycopg
from django.db.backends.postgresql import base, features
from gevent.monkey import get_original

# Longer than a busy pool's turnaround (milliseconds), short enough that a connection idle since a quiet
# spell gets the full check: a peer that vanished without closing the socket is only found by writing to it.
IDLE_CHECK_SECONDS = 1.0
# The standard library's poll even in a gevent worker: gevent's would yield to other greenlets and, with
# a zero timeout, may report nothing for a socket that is readable.
_poll = get_original("select", "poll")


class DatabaseFeatures(features.DatabaseFeatures):
    # The oldest PostgreSQL we support (README "Configuration"): Django refuses an older server when it
    # connects ("PostgreSQL 15 or later is required (found 14.x)."), before any statement runs.
    minimum_database_version = (15,)


class DatabaseWrapper(base.DatabaseWrapper):
    features_class = DatabaseFeatures

    def get_new_connection(self, conn_params):
        pool = self.pool
        if pool is not None and pool.closed:
            # Before the pool's first use, one plain connection: a server that is down or a database that
            # does not exist fails at once with libpq's reason (manage.py turns it into a sentence), instead
            # of the pool retrying for DB_POOL_TIMEOUT seconds and logging each attempt.
            self.Database.connect(**{**self.get_connection_params(), "connect_timeout": 5}).close()
        connection = super().get_new_connection(conn_params)
        if pool is None or _recent_and_quiet(connection):
            return connection
        try:
            pool.check_connection(connection)
        except self.Database.Error:
            pool.putconn(connection)  # broken: the pool discards it and opens a replacement
            pool.check()  # the other idle connections most likely died with it: discard them all now
            connection = super().get_new_connection(conn_params)
        return connection

    def _close(self):
        if self.connection is not None and self.pool is not None:
            self.connection._returned_at = time.monotonic()  # back to the pool now (_recent_and_quiet)
        return super()._close()


def _recent_and_quiet(connection) -> bool:
    """Whether the connection came back to the pool less than IDLE_CHECK_SECONDS ago and its socket has
    nothing to read (no error, no end of stream): then it needs no round trip to be trusted."""
    returned_at = getattr(connection, "_returned_at", None)
    if returned_at is None or time.monotonic() - returned_at > IDLE_CHECK_SECONDS:
        return False
    poller = _poll()
    try:
        poller.register(connection.fileno(), select.POLLIN)
    except psycopg.Error:  # closed already: the full check fails and replaces it
        return False
    return not poller.poll(0)
