"""A database that goes away: a request that cannot reach it gets 503 `database_unavailable` with Retry-After,
and after a PostgreSQL restart (here: every backend of the test database terminated, as a restart does to
them) the pooled connections that died are replaced, not handed to requests (config/postgresql/base.py).

The restart tests run a real gunicorn (tests/live_gunicorn.py) on the test database: its pool is the one a
production process has, with connections idle between requests."""

import http.client
import json
import threading
import time

import pytest
from django.db import connection, transaction
from django.test import Client
from werkzeug import Response

from billing.credits import credits_grant
from channels_app.models import AIAgent, Workspace
from tests.config.test_health import database_down
from tests.conftest import SEED_TEXT, error_of
from tests.factories import ChannelFactory, KnowledgeEntryFactory, WorkspaceFactory, api_key_for
from tests.live_gunicorn import database_url_for_servers, gunicorn

LLM_ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "test-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "On its way."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
}
WAIT_SECONDS = 30  # bound on every wait for the server or the database; none is a timing assertion


# --- in process: what a request gets when the database does not answer ----------------------------------


def test_a_request_the_database_cannot_answer_gets_503_with_retry_after(api):
    with database_down():
        response = api.post(SEED_TEXT)

    assert response.status_code == 503
    assert error_of(response)["code"] == "database_unavailable"
    assert response["Retry-After"] == "2"
    assert api.post(SEED_TEXT).status_code == 200  # and the real connection works again


def test_a_database_failure_outside_the_api_views_is_a_503_too(db):
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "a" * 32  # a session to look up: the admin reads it before any view runs
    with database_down():
        response = client.get("/admin/")

    assert response.status_code == 503
    assert error_of(response)["code"] == "database_unavailable"


# --- in process: which pooled connections cost a round trip to check (config/postgresql/base.py) -------------


@pytest.fixture
def full_checks(transactional_db, monkeypatch):
    """The empty queries the backend sends to check pooled connections, counted, on a pool as a process
    starts with it: min_size connections no request has used. Earlier tests of this process (threads, a
    pytest-xdist worker's share of the suite) grow the pool, and its connections idle since then would each
    get their round trip once the queue reaches them."""
    connection.close()
    connection.close_pool()
    connection.ensure_connection()
    pool = connection.pool
    sent: list[object] = []
    check = pool.check_connection
    monkeypatch.setattr(pool, "check_connection", lambda conn: (sent.append(conn), check(conn))[1])
    connection.close()
    return sent


def test_a_connection_back_from_a_request_moments_ago_is_reused_without_a_round_trip(full_checks, monkeypatch):
    from config.postgresql import base

    # "moments ago" however slow the loaded machine is between two lines: the test is about which
    # connections are trusted, the threshold's value is the next test's
    monkeypatch.setattr(base, "IDLE_CHECK_SECONDS", WAIT_SECONDS)
    for _ in range(5):  # a busy pool: each connection comes back and goes out again at once
        connection.ensure_connection()
        connection.close()
    connection.ensure_connection()  # whichever connection the pool gives now, it was back moments ago
    connection.close()
    connection.ensure_connection()

    assert len(full_checks) <= 2  # the pool's connections that no request had used yet (min_size 2)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_a_connection_idle_for_longer_gets_the_round_trip(full_checks, monkeypatch):
    from config.postgresql import base

    connection.ensure_connection()
    connection.close()
    monkeypatch.setattr(base, "IDLE_CHECK_SECONDS", 0.0)  # every connection has now been idle "too long"
    checked = len(full_checks)

    connection.ensure_connection()

    assert len(full_checks) == checked + 1


def test_a_recent_connection_whose_backend_was_terminated_is_not_trusted(transactional_db):
    """What a restart does to a connection that was back in the pool a moment before: the server's FATAL
    error and the closed socket make it readable, so it gets the full check however recent it is."""
    import psycopg

    from config.postgresql.base import _recent_and_quiet

    params = connection.settings_dict
    conn = psycopg.connect(
        dbname=params["NAME"], user=params["USER"], password=params["PASSWORD"], host=params["HOST"],
        port=params["PORT"], autocommit=True,
    )  # fmt: skip
    try:
        conn._returned_at = time.monotonic()  # type: ignore[attr-defined]
        assert _recent_and_quiet(conn)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
        deadline = time.monotonic() + WAIT_SECONDS
        while _recent_and_quiet(conn):
            assert time.monotonic() < deadline, "the terminated connection still looks quiet"
            time.sleep(0.01)
    finally:
        conn.close()


# --- a real gunicorn, a database restart -------------------------------------------------------------------


@pytest.fixture
def live_channel(transactional_db):
    """A channel with the built-in agent and a key, committed, so that the server process sees them."""
    workspace = WorkspaceFactory()
    credits_grant(workspace=workspace, amount=1000, note="outage test credits")
    channel = ChannelFactory(workspace=workspace)
    KnowledgeEntryFactory(agent=channel.agent, question="Can I get a refund?", answer="Yes, within 30 days.")
    return channel, api_key_for(workspace)[1]


def post(
    server, channel, key: str, identifier: str, idempotency_key: str | None = None
) -> tuple[int, dict[str, str], dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_SECONDS * 2)
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    if idempotency_key:
        headers["X-Idempotency-Key"] = idempotency_key
    try:
        body = json.dumps({**SEED_TEXT, "contactIdentifier": identifier})
        conn.request("POST", f"/api/v1/channels/{channel.pk}/messages", body, headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def post_concurrently(server, channel, key: str, identifiers: list[str]) -> list[tuple[int, dict, dict]]:
    results: list = [None] * len(identifiers)

    def send(index: int) -> None:
        results[index] = post(server, channel, key, identifiers[index])

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(identifiers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS * 2)
    assert not any(thread.is_alive() for thread in threads), "a request hung"
    return results


def other_backends(where: str = "") -> list[int]:
    """The other backends of the test database now (inside a transaction PostgreSQL would keep answering
    from the statistics snapshot it took first, hence the clear)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()" + where
        )
        return [row[0] for row in cursor.fetchall()]


def terminate_backends() -> int:
    """What a PostgreSQL restart does to the server's connections, on the test database only: every backend
    but this test's own is terminated; returns once they are gone."""
    pids = other_backends()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
    deadline = time.monotonic() + WAIT_SECONDS
    while set(pids) & set(other_backends()):
        assert time.monotonic() < deadline, "terminated backends did not end"
        time.sleep(0.05)
    return len(pids)


def test_after_a_restart_the_connections_idle_in_the_pool_fail_no_request(live_channel, tmp_path):
    channel, key = live_channel
    with gunicorn(tmp_path / "server.log", DATABASE_URL=database_url_for_servers()) as server:
        # given: a pool holding several idle connections
        warm = post_concurrently(server, channel, key, [f"warm-{i}@example.com" for i in range(8)])
        assert [status for status, _, _ in warm] == [200] * 8

        # when: PostgreSQL "restarts" while the node is idle
        assert terminate_backends() >= 2  # at least the pool's min_size

        # then: every later request is answered; none gets a dead connection
        after = [post(server, channel, key, f"after-{i}@example.com") for i in range(12)]
        assert [(status, body.get("error", {}).get("code")) for status, _, body in after] == [(200, None)] * 12


def test_requests_inside_a_statement_at_a_restart_get_503_and_later_ones_succeed(live_channel, tmp_path):
    channel, key = live_channel
    with gunicorn(tmp_path / "server.log", DATABASE_URL=database_url_for_servers()) as server:
        assert post(server, channel, key, "first@example.com")[0] == 200

        # given: five requests inside a statement (waiting for the workspace row this test holds)
        results: list = []
        with transaction.atomic():
            Workspace.objects.select_for_update().get(pk=channel.workspace_id)
            sender = threading.Thread(
                target=lambda: results.extend(
                    post_concurrently(server, channel, key, [f"inflight-{i}@example.com" for i in range(5)])
                )
            )
            sender.start()
            deadline = time.monotonic() + WAIT_SECONDS
            while len(other_backends(" AND wait_event_type = 'Lock'")) < 5:
                assert time.monotonic() < deadline, "the requests did not reach the locked row"
                time.sleep(0.05)

            # when: PostgreSQL "restarts"
            terminate_backends()
        sender.join(WAIT_SECONDS * 2)

        # then: those five get a clean 503 to retry, not a 500
        assert len(results) == 5
        for status, headers, body in results:
            assert (status, body["error"]["code"]) == (503, "database_unavailable"), body
            assert headers["Retry-After"] == "2"
        # and every request after them is answered
        after = [post(server, channel, key, f"after-{i}@example.com") for i in range(10)]
        assert [status for status, _, _ in after] == [200] * 10

    lines = server.json_log_lines()
    warnings = [line for line in lines if line["event"].startswith("database unavailable")]
    assert len(warnings) == 5 and all("sqlstate=57P01" in line["event"] for line in warnings)  # admin shutdown
    assert not [line for line in lines if line["event"].startswith("unhandled error")]


def test_a_restart_while_the_reply_is_recorded_frees_the_idempotency_key_for_the_retry(
    live_channel, tmp_path, httpserver
):
    """The record phase's transaction breaks: the request gets 503, and its key, message and credits are
    released on a new connection (Django drops a connection whose rollback failed), so the retry with the
    same key is answered, not refused with 409 until the processing lease ends."""
    channel, key = live_channel
    AIAgent.objects.filter(pk=channel.agent_id).update(
        provider="openai", base_url=httpserver.url_for("/v1"), model="test-model", timeout_seconds=30
    )
    asked, go = threading.Event(), threading.Event()

    def agent(request):  # answers once the test says so
        asked.set()
        go.wait(WAIT_SECONDS)
        return Response(json.dumps(LLM_ANSWER), content_type="application/json")

    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(agent)
    with gunicorn(tmp_path / "server.log", DATABASE_URL=database_url_for_servers()) as server:
        results: list = []
        request = threading.Thread(target=lambda: results.append(post(server, channel, key, "r@example.com", "k-1")))
        request.start()
        assert asked.wait(WAIT_SECONDS), "the agent was not called"

        # given: the reply is being recorded, waiting for the workspace row this test holds
        with transaction.atomic():
            Workspace.objects.select_for_update().get(pk=channel.workspace_id)
            go.set()
            deadline = time.monotonic() + WAIT_SECONDS
            while not other_backends(" AND wait_event_type = 'Lock'"):
                assert time.monotonic() < deadline, "the request did not reach the locked row"
                time.sleep(0.05)

            # when: PostgreSQL "restarts"
            terminate_backends()
        request.join(WAIT_SECONDS * 2)

        # then: 503, and the retry with the same key is answered
        ((status, _, body),) = results
        assert (status, body["error"]["code"]) == (503, "database_unavailable")
        status, _, body = post(server, channel, key, "r@example.com", "k-1")
        assert status == 200, body
        assert body["messageId"] and len(body["aiMessages"]) == 1


def test_readyz_answers_503_within_about_a_second_during_a_database_outage(live_channel, tmp_path):
    from tests.api.test_replies_later_worker import database_refusing_connections

    with gunicorn(tmp_path / "server.log", DATABASE_URL=database_url_for_servers()) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_SECONDS)
        conn.request("GET", "/readyz")
        assert conn.getresponse().status == 200
        conn.close()

        with database_refusing_connections():  # its backends terminated, no new connection accepted
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_SECONDS)
            started = time.monotonic()
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            seconds = time.monotonic() - started
            body = json.loads(response.read())
            conn.close()

        assert (response.status, body["checks"]["database"]) == (503, "unreachable")
        assert seconds < 2.5, f"/readyz took {seconds:.1f} s"

        # and once the database is back, ready again
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_SECONDS)
            conn.request("GET", "/readyz")
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                break
            assert time.monotonic() < deadline, "not ready again"
            time.sleep(0.2)
