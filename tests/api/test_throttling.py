"""Rate limiting per API key: 429 `rate_limited` with Retry-After, a fresh count each minute, fail open."""

import logging
from datetime import UTC, datetime

import pytest
import time_machine
from django.core.cache import cache

from channels_app.models import Workspace
from tests.conftest import SEED_TEXT, Api, error_of, requires_redis
from tests.factories import api_key_for

# 10 s into a minute: the window ends 50 s later
T0 = datetime(2026, 11, 25, 12, 0, 10, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fresh_counts():
    cache.clear()
    yield
    cache.clear()


def limit(workspace: Workspace, per_minute: int | None) -> None:
    Workspace.objects.filter(pk=workspace.pk).update(rate_limit_per_minute=per_minute)


def test_over_the_workspace_limit_is_429_with_retry_after(api, workspace):
    # given
    limit(workspace, 2)

    # when
    with time_machine.travel(T0, tick=False):
        statuses = [api.post(SEED_TEXT).status_code for _ in range(3)]
        refused = api.post(SEED_TEXT)

    # then
    assert statuses == [200, 200, 429]
    assert refused.status_code == 429
    assert refused["Retry-After"] == "50"
    error = error_of(refused)
    assert error["code"] == "rate_limited" and error["details"] == {"retryAfterSeconds": 50}
    assert "50 seconds" in error["message"]


def test_the_count_starts_again_in_the_next_minute(api, workspace):
    limit(workspace, 1)
    with time_machine.travel(T0, tick=False):
        assert api.post(SEED_TEXT).status_code == 200
        assert api.post(SEED_TEXT).status_code == 429

    with time_machine.travel(T0.replace(minute=1, second=0), tick=False):
        assert api.post(SEED_TEXT).status_code == 200
        assert api.post(SEED_TEXT).status_code == 429


def test_each_key_has_its_own_count(api, client, channel, workspace):
    limit(workspace, 1)
    other = Api(client, channel, api_key_for(workspace, name="second")[1])

    with time_machine.travel(T0, tick=False):
        assert api.post(SEED_TEXT).status_code == 200
        assert api.post(SEED_TEXT).status_code == 429
        assert other.post(SEED_TEXT).status_code == 200


def test_platform_default_applies_when_the_workspace_sets_none(api, workspace, settings):
    limit(workspace, None)
    settings.API_RATE_LIMIT_PER_MINUTE = 1

    with time_machine.travel(T0, tick=False):
        assert [api.post(SEED_TEXT).status_code for _ in range(2)] == [200, 429]


def test_zero_means_no_limit(api, workspace, settings):
    limit(workspace, 0)
    settings.API_RATE_LIMIT_PER_MINUTE = 1

    with time_machine.travel(T0, tick=False):
        assert {api.post(SEED_TEXT).status_code for _ in range(3)} == {200}


def test_requests_without_a_valid_key_are_not_counted_against_a_key(api, workspace):
    limit(workspace, 1)
    with time_machine.travel(T0, tick=False):
        assert api.post(SEED_TEXT, key="").status_code == 401
        assert api.post(SEED_TEXT, key="abcdefgh.wrong").status_code == 401
        assert api.post(SEED_TEXT).status_code == 200


def test_refused_requests_count_too(api, workspace):
    """The limit protects the server: a request refused as invalid has cost as much as an accepted one."""
    limit(workspace, 1)
    with time_machine.travel(T0, tick=False):
        assert api.post({**SEED_TEXT, "type": "STICKER"}).status_code == 400
        assert api.post(SEED_TEXT).status_code == 429


def test_idempotent_replays_count_like_any_request(api, workspace):
    limit(workspace, 2)
    with time_machine.travel(T0, tick=False):
        first = api.post(SEED_TEXT, idempotency_key="k-1")
        replay = api.post(SEED_TEXT, idempotency_key="k-1")
        third = api.post(SEED_TEXT, idempotency_key="k-1")

    assert first.status_code == 200
    assert (replay.status_code, replay["Idempotent-Replayed"]) == (200, "true")
    assert third.status_code == 429 and "Idempotent-Replayed" not in third


def test_unreachable_cache_fails_open_with_a_warning(api, workspace, settings, caplog):
    # given: the rate limiter's Redis is down (nothing listens on port 1)
    limit(workspace, 1)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    from api.edge import throttling

    throttling._last_warning = float("-inf")

    # when
    with caplog.at_level(logging.WARNING, logger="api.edge.throttling"):
        statuses = [api.post(SEED_TEXT).status_code for _ in range(3)]

    # then: served, not limited, and said once
    assert statuses == [200, 200, 200]
    warnings = [r for r in caplog.records if r.name == "api.edge.throttling"]
    assert len(warnings) == 1 and "cache is unreachable" in warnings[0].getMessage()


@requires_redis
def test_the_count_is_shared_through_redis(api, workspace, settings):
    """Two web nodes share one count: a second cache client (another node's) sees this one's hits."""
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    limit(workspace, 1)
    assert isinstance(caches["default"], RedisCache)
    prefix = api.key.split(".")[0]
    with time_machine.travel(T0, tick=False):
        assert api.post(SEED_TEXT).status_code == 200
        other_node = RedisCache(settings.CACHES["default"]["LOCATION"], settings.CACHES["default"])
        window = int(T0.timestamp() // 60)
        assert other_node.get(f"ratelimit:key:{prefix}:{window}") == 1
        assert api.post(SEED_TEXT).status_code == 429


@requires_redis
def test_a_windows_count_expires_shortly_after_the_window(api, workspace):
    """The count is created with its expiry, in the same transaction as its first increment: a key left
    without one would stay in Redis for good."""
    from django.core.cache import caches

    limit(workspace, 5)
    prefix = api.key.split(".")[0]
    with time_machine.travel(T0, tick=False):
        assert api.post(SEED_TEXT).status_code == 200
        assert api.post(SEED_TEXT).status_code == 200
    backend = caches["default"]
    key = backend.make_and_validate_key(f"ratelimit:key:{prefix}:{int(T0.timestamp() // 60)}")
    redis = backend._cache.get_client(key)
    assert int(redis.get(key)) == 2
    assert 60 < redis.ttl(key) <= 70
