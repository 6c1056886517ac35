"""/healthz and /readyz (README.md, "Production"): liveness touches nothing; readiness needs the database and, where
REDIS_URL is set, Redis."""

from contextlib import contextmanager

import pytest
from django.db import connections

from tests.conftest import error_of

DOWN_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@contextmanager
def database_down():
    """Swap this thread's default connection for one whose server is gone (a port nothing listens on). The
    real connection is put back after."""
    real = connections["default"]
    settings_dict = {**real.settings_dict, "OPTIONS": {}}
    settings_dict.update({"HOST": "127.0.0.1", "PORT": "1"})
    broken = real.__class__(settings_dict, alias="default")
    connections["default"] = broken
    try:
        yield
    finally:
        connections["default"] = real
        broken.close()


@pytest.fixture
def redis_down(settings):
    settings.REDIS_URL = DOWN_REDIS
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": DOWN_REDIS,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }


def test_healthz_is_ok(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_stays_ok_with_the_database_down(client, db):
    with database_down():
        response = client.get("/healthz")
    assert response.status_code == 200


def test_readyz_is_ok_when_its_services_answer(client, db, settings):
    response = client.get("/readyz")

    assert response.status_code == 200
    expected = {"database": "ok", "redis": "ok"} if settings.REDIS_URL else {"database": "ok"}
    assert response.json() == {"status": "ok", "checks": expected}


def test_readyz_is_503_when_the_database_is_unreachable(client, db, settings):
    settings.REDIS_URL = ""
    with database_down():
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": "unreachable"}}
    # and the real connection works again
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_when_redis_is_configured_but_down(client, db, redis_down):
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": "ok", "redis": "unreachable"}}


def test_the_api_still_serves_with_redis_down(api, redis_down):
    """Redis holds only the rate limits' counts: without it requests are served, unlimited."""
    assert api.post().status_code == 200


def test_probes_take_no_api_key_and_only_read(client, db):
    assert client.post("/readyz").status_code == 405
    assert client.get("/readyz", HTTP_X_API_KEY="nonsense").status_code == 200


# --- the Host header -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.parametrize("host", ["10.1.2.3", "10.1.2.3:8000", "[fd00::1]:8000", "lb.internal"])
def test_probes_answer_whatever_the_host(client, db, path, host):
    """Load balancers probe by IP address, which is not in ALLOWED_HOSTS."""
    response = client.get(path, HTTP_HOST=host)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("path", ["/api/v1/channels/ch_x/messages", "/admin/", "/api/schema/", "/nothing"])
def test_an_unknown_host_gets_the_json_error_body(client, db, path):
    from tests.conftest import error_of

    response = client.get(path, HTTP_HOST="attacker.example")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    error = error_of(response)
    assert error["code"] == "invalid_host"
    assert error["details"] == {"header": "Host", "host": "attacker.example"}
    assert response["X-Request-ID"]


def test_an_unknown_host_is_refused_before_the_api_looks_at_the_request(api):
    response = api.post(HTTP_HOST="attacker.example")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_host"


def test_favicon_answers_204_not_a_404_on_the_admins_host(admin_client):
    # the browser asks for it on every admin page
    assert admin_client.get("/admin/").status_code == 200

    response = admin_client.get("/favicon.ico")

    assert (response.status_code, response.content) == (204, b"")
    assert "max-age=86400" in response["Cache-Control"]
    assert admin_client.head("/favicon.ico").status_code == 204


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/favicon.ico"])
def test_another_method_than_get_is_the_json_error_body(client, db, path):
    response = client.post(path)

    assert error_of(response, status=405) == {
        "code": "method_not_allowed",
        "message": "This URL does not take POST. Use GET.",
        "details": {"method": "POST", "allowed": ["GET"]},
    }
    assert response["Allow"] == "GET, HEAD"
