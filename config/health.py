"""Liveness and readiness probes (README.md, "Production": "Endpoints besides the API").

`/healthz` answers while the process can answer at all: it touches nothing, so a database outage does not
make an orchestrator restart healthy web processes. `/readyz` says whether this node can serve the API: the
database answers a query and, where REDIS_URL is set, Redis answers a read and the Celery broker a PING
(each within its socket timeout); otherwise 503, so a load balancer
stops sending traffic here. Neither needs an API key; neither says more than "ok" or "unreachable".
"""

import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.db import connections
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from config.broker import broker_in_use, broker_ping
from config.exception_handler import require_safe

logger = logging.getLogger(__name__)


# The probe's bound on the database: a load balancer's probe gives up after a few seconds, so /readyz must
# answer 503 sooner than the pool's DB_POOL_TIMEOUT (10 s) during an outage.
READYZ_DATABASE_SECONDS = 1.0


def _database_ok(alias: str = "default") -> bool:
    """A round trip on a pooled connection, waited for READYZ_DATABASE_SECONDS at most (not the pool's own
    timeout). A connection that turns out dead (a restart) makes the pool check its idle ones, and the probe
    tries once more within the same bound."""
    pool = getattr(connections[alias], "pool", None)
    deadline = time.monotonic() + READYZ_DATABASE_SECONDS
    for attempt in (1, 2):
        try:
            if pool is None:
                with connections[alias].cursor() as cursor:
                    cursor.execute("SELECT 1")
                    cursor.fetchone()
            else:
                pool.open()  # as Django opens it at a first connection (a no-op once open)
                with pool.connection(timeout=max(deadline - time.monotonic(), 0.01)) as conn:
                    conn.execute("SELECT 1").fetchone()
            return True
        except Exception as error:  # any failure means "not ready", whatever the driver raises
            if attempt == 1 and pool is not None and time.monotonic() < deadline:
                pool.check()  # a dead idle connection: the others most likely died with it
                continue
            logger.warning("readyz: database %s unreachable: %s", alias, type(error).__name__)
    return False


def _redis_ok() -> bool:
    try:
        cache.get("readyz")  # a round trip; the cache's socket timeouts keep it short
        return True
    except Exception as error:
        logger.warning("readyz: redis unreachable: %s", type(error).__name__)
        return False


@never_cache
@require_safe
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request):
    checks = {"database": "ok" if _database_ok() else "unreachable"}
    if settings.REDIS_URL:
        checks["redis"] = "ok" if _redis_ok() else "unreachable"
    if broker_in_use():
        checks["broker"] = "ok" if broker_ping() else "unreachable"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
