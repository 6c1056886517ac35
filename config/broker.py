"""Redis as the web process meets it: the Celery broker and the rate limiter's cache, each bounded and each
remembered as down for a short while once found down (README "Production", "Redis").

Every call to the broker is bounded by the transport options in settings (socket and connect timeouts, no
connection retries): a broker that accepts connections and never answers costs a request at most
BROKER_TIMEOUT_SECONDS, and one that refuses them costs nothing. Once a call failed, this process does not
try again for REDIS_BACKOFF_SECONDS (an `Outage`): it falls back at once, as without a broker, instead of
paying the timeout on every request while Redis is away.
"""

import threading
import time

import structlog
from django.conf import settings

logger = structlog.get_logger(__name__)


class Outage:
    """One process's memory that a service was found down: `down()` is true for REDIS_BACKOFF_SECONDS after
    `found_down()`. Shared by the process's threads (greenlets); a race between two of them costs at most
    one more bounded try."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._until = 0.0
        self._lock = threading.Lock()

    def down(self) -> bool:
        return time.monotonic() < self._until

    def found_down(self, error: BaseException) -> None:
        with self._lock:
            first = not self.down()
            self._until = time.monotonic() + float(settings.REDIS_BACKOFF_SECONDS)
        if first:
            logger.warning(
                "redis unreachable; falling back for a while",
                service=self.name,
                error=type(error).__name__,
                backoff_seconds=settings.REDIS_BACKOFF_SECONDS,
            )

    def clear(self) -> None:
        self._until = 0.0


broker_outage = Outage("broker")
cache_outage = Outage("cache")


def broker_in_use() -> bool:
    """Whether tasks go through a broker (REDIS_URL), not run eagerly in the caller."""
    from celery import current_app

    return not current_app.conf.task_always_eager


def broker_ping() -> bool:
    """Whether the broker answers a PING within its timeouts (the readiness probe, config/health.py)."""
    from celery import current_app

    try:
        with current_app.connection_for_write() as conn:
            conn.default_channel.client.ping()
    except Exception as error:  # kombu and redis-py raise their own errors
        broker_outage.found_down(error)
        return False
    return True
