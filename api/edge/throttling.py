"""Rate limiting per API key: a fixed one-minute window counted in the shared cache.

DRF runs throttles after authentication, so `request.auth` is the key. The count lives in Django's cache:
Redis when REDIS_URL is set (one count across all web nodes), local memory otherwise (one per process, which
is what `make run` needs). DRF's SimpleRateThrottle keeps a list of timestamps with get-then-set, which loses
counts when two nodes write at once; here the count is one atomic Redis transaction (create the key with its
expiry if it is missing, then increment it), sent as one round trip: Django's `cache.add` + `cache.incr`
would take three (SET NX, EXISTS, INCRBY) on every request after a window's first.

A fixed window lets a client send up to twice the limit across a window's edge; in exchange it costs one
round trip and one small key per API key and minute.

If the cache is unreachable the request is served (fail open) and a warning is logged, at most once a
minute per process: a Redis outage must not take the API down (README.md, "Rate limits"). A process that
found it unreachable does not ask it again for REDIS_BACKOFF_SECONDS (config/broker.py), so a Redis that
hangs costs one request its socket timeout, not every request.

Every authenticated request counts, a replayed idempotent request too: a replay is cheap but not free,
and a client looping on one key must meet the same limit as any other.
"""

import logging
import math
import time

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.throttling import BaseThrottle

from config.broker import cache_outage

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60  # the setting is "per minute"
# A window's key outlives it a little, so a slow clock on another node still finds it.
_KEY_SECONDS = WINDOW_SECONDS + 10
_WARN_EVERY_SECONDS = 60.0  # one warning a minute per process is enough to page on, and not a flood
_last_warning = -math.inf


def rate_limit_for(api_key) -> int:
    """Requests per minute for this key: the workspace's own limit, else the platform's; 0 means none."""
    limit = api_key.workspace.rate_limit_per_minute
    return settings.API_RATE_LIMIT_PER_MINUTE if limit is None else limit


class ApiKeyRateThrottle(BaseThrottle):
    def __init__(self) -> None:
        self.wait_seconds: float | None = None

    def allow_request(self, request, view) -> bool:
        api_key = request.auth
        if api_key is None:  # views without API keys (docs, schema) are not limited here
            return True
        limit = rate_limit_for(api_key)
        if limit <= 0:
            return True
        if cache_outage.down():  # found unreachable moments ago: not asked again for a while
            return True
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        try:
            count = self._hit(f"ratelimit:key:{api_key.prefix}:{window}")
        except Exception as error:  # redis-py raises its own ConnectionError/TimeoutError, not Django's
            cache_outage.found_down(error)
            self._warn_fail_open(error)
            return True
        if count <= limit:
            return True
        self.wait_seconds = (window + 1) * WINDOW_SECONDS - now
        return False

    def wait(self) -> float | None:
        return None if self.wait_seconds is None else max(1, math.ceil(self.wait_seconds))

    @staticmethod
    def _hit(key: str) -> int:
        backend = caches[DEFAULT_CACHE_ALIAS]
        if isinstance(backend, RedisCache):
            full_key = backend.make_and_validate_key(key)
            # Django's cache API has no atomic "increment or create": its own Redis client does
            # (RedisCache._cache, the client Django's cache methods use, with the same connection pool). One
            # round trip: MULTI, SET NX EX, INCR, EXEC.
            pipeline = backend._cache.get_client(full_key, write=True).pipeline()  # type: ignore[attr-defined]
            pipeline.set(full_key, 0, ex=_KEY_SECONDS, nx=True)
            pipeline.incr(full_key)
            return pipeline.execute()[1]
        # Other caches (local memory, per process): no other node writes the count.
        if cache.add(key, 1, timeout=_KEY_SECONDS):
            return 1
        try:
            return cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=_KEY_SECONDS)
            return 1

    @staticmethod
    def _warn_fail_open(error: Exception) -> None:
        global _last_warning
        now = time.monotonic()
        if now - _last_warning >= _WARN_EVERY_SECONDS:
            _last_warning = now
            logger.warning(
                "rate limiting skipped: the cache is unreachable (%s); serving without limits", type(error).__name__
            )
