"""Django's Redis cache, confined to its key prefix: `clear()` deletes this deployment's keys only, not the
whole Redis database (Django's own FLUSHDB would take the broker's queues and any neighbour's keys with it).
The prefix is REDIS_KEY_PREFIX (README "Configuration"); each pytest-xdist worker has its own
(config/settings/test.py), so tests running in parallel on one Redis database never see each other's keys."""

from django.core.cache.backends.redis import RedisCache

SCAN_BATCH = 1000


class PrefixedRedisCache(RedisCache):
    def clear(self) -> None:
        if not self.key_prefix:
            super().clear()
            return
        client = self._cache.get_client(None, write=True)  # type: ignore[attr-defined]
        pattern = f"{self.key_prefix}:*"
        batch: list = []
        for key in client.scan_iter(match=pattern, count=SCAN_BATCH):
            batch.append(key)
            if len(batch) >= SCAN_BATCH:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
