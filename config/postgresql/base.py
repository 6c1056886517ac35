"""Django's PostgreSQL backend with one change: a pooled connection is checked before it is handed out.

Why: a connection waits in the psycopg pool between requests. When PostgreSQL restarts (or a backend is
terminated, or a proxy drops an idle connection), every idle connection in the pool is dead, and the pool
only notices when it is used: without a check, each of them fails one request with 500, for as long as
they sit in the pool (minutes on an idle node). With the check, a dead connection costs one empty query
(a round trip on a working connection, the price of every checkout) and no request.

Not Django's `CONN_HEALTH_CHECKS` (which hands the pool psycopg's `check_connection`): on a failed check
the pool backs off (1 s, 2 s, 4 s, ...) before it tries the next idle connection, which after a restart is
dead too, so the first requests wait several seconds and some run into `DB_POOL_TIMEOUT`. Here one dead
connection makes the pool check all its idle connections at once (`ConnectionPool.check()`: each dead one
fails at once, with no waiting) and the request takes a fresh one, so a restart costs only the requests
that were inside a statement when it happened (answered 503 `database_unavailable`, config/exception_handler.py).
"""

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        pool = self.pool
        if pool is None:
            return connection
        try:
            pool.check_connection(connection)
        except self.Database.Error:
            pool.putconn(connection)  # broken: the pool discards it and opens a replacement
            pool.check()  # the other idle connections most likely died with it: discard them all now
            connection = super().get_new_connection(conn_params)
        return connection
