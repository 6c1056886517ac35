"""The Redis cache confined to its key prefix (config/cache.py): clear() takes only its own keys, so parallel
test workers and deployments sharing one Redis database keep theirs."""

import pytest
from django.conf import settings
from django.core.cache import caches

from config.cache import PrefixedRedisCache
from tests.conftest import requires_redis


def _cache(prefix: str) -> PrefixedRedisCache:
    return PrefixedRedisCache(settings.REDIS_URL, {"KEY_PREFIX": prefix})


@requires_redis
@pytest.mark.parametrize("count", [3, 2500])  # fewer than one SCAN batch, and several batches
def test_clear_deletes_its_own_keys_and_no_one_elses(count):
    ours, neighbour = _cache("test-clear-ours"), _cache("test-clear-neighbour")
    ours.set_many({f"k{index}": index for index in range(count)})
    neighbour.set("k0", "kept")
    try:
        ours.clear()

        assert ours.get_many([f"k{index}" for index in range(count)]) == {}
        assert neighbour.get("k0") == "kept"
    finally:
        neighbour.clear()


@requires_redis
def test_the_default_cache_is_the_prefixed_one_with_this_workers_prefix():
    backend = caches["default"]
    assert isinstance(backend, PrefixedRedisCache)
    assert backend.key_prefix == f"{settings.REDIS_KEY_PREFIX}channels-api"
