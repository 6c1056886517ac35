"""Liveness and readiness probes (README.md, "Production": "Endpoints besides the API").

`/healthz` answers while the process can answer at all: it touches nothing, so a database outage does not
make an orchestrator restart healthy web processes. `/readyz` says whether this node can serve the API: the
database answers a query and, where REDIS_URL is set, Redis answers a read; otherwise 503, so a load balancer
stops sending traffic here. Neither needs an API key; neither says more than "ok" or "unreachable".
"""

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import connections
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from config.exception_handler import require_safe

logger = logging.getLogger(__name__)


def _database_ok(alias: str = "default") -> bool:
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return True
    except Exception as error:  # any failure means "not ready", whatever the driver raises
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
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
