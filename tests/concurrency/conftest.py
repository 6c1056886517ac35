"""Helpers for the race tests: threads started together, each with its own client and connection."""

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from billing.credits import credits_grant
from billing.models import UsageLedgerEntry
from channels_app.models import Workspace
from tests.agents import ScriptedAgent
from tests.conftest import Api
from tests.factories import ChannelFactory, WorkspaceFactory, api_key_for, document_for

THREAD_TIMEOUT_SECONDS = 60  # a hung thread fails the test instead of hanging the run

# The threads share the process's connection pool (DB_POOL_MAX_SIZE 20, DB_POOL_TIMEOUT 10 s) as requests of
# one gevent worker do. A request holds a connection only in its short accept and record phases (and, in a
# test thread, until the thread ends right after its request), so 100 threads queue for a connection for a
# couple of seconds at most, well inside the timeout. The pool is not raised for the tests: the queueing is
# what production does, and several test runs share one PostgreSQL server's max_connections.


def run_together(count: int, request: Callable[[int, Api], Any], *, channel, key: str) -> list[Any]:
    """Run `request(index, api)` in `count` threads released at once by a barrier; return the results in
    index order. Each thread has its own test client and its own database connection (Django's are
    per thread), given back to the pool when the thread ends, whatever happened."""
    # Load the middleware once here first: django-prometheus creates its metrics singleton on the first
    # load without a lock, so fifty clients loading it at once register the metrics twice. (In production
    # one WSGI handler per process loads the middleware at start-up, before any request thread.)
    Client().handler.load_middleware()
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def work(index: int) -> None:
        api = Api(Client(), channel, key)
        try:
            barrier.wait(timeout=THREAD_TIMEOUT_SECONDS)
            results[index] = request(index, api)
        except BaseException as error:  # re-raised in the test's thread below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(index,), name=f"race-{index}") for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a request thread hung"
    if errors:
        raise errors[0]
    return results


def lock_waiters() -> list[int]:
    """The backends of the test database waiting for a lock now (a fresh statistics snapshot: inside a
    transaction PostgreSQL would keep answering from the first one)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return [row[0] for row in cursor.fetchall()]


def wait_for_lock_waiters(count: int) -> list[int]:
    """Wait until `count` backends wait for a lock (a request reached the row a test holds); their pids."""
    deadline = time.monotonic() + THREAD_TIMEOUT_SECONDS
    while len(waiting := lock_waiters()) < count:
        assert time.monotonic() < deadline, f"fewer than {count} backends ever waited for a lock"
        time.sleep(0.02)
    return waiting


def in_thread(results: dict[str, Any], name: str, call: Callable[[], Any]) -> threading.Thread:
    """Start `call()` in a thread of its own (its own connection, closed when it ends); its result goes to
    `results[name]`."""

    def work() -> None:
        try:
            results[name] = call()
        finally:
            connection.close()

    thread = threading.Thread(target=work, name=name)
    thread.start()
    return thread


def books(workspace: Workspace) -> tuple[int, int, int]:
    """(balance, reserved, sum of the ledger) of the workspace as stored now."""
    workspace.refresh_from_db()
    ledger = sum(UsageLedgerEntry.objects.filter(workspace=workspace).values_list("delta", flat=True))
    return workspace.credit_balance, workspace.credit_reserved, ledger


def agent_thinks_until_told(agent: ScriptedAgent) -> tuple[threading.Event, threading.Event]:
    """Script the agent's next call to wait: (thinking, go), the first set once it thinks, the second what it
    waits for."""
    thinking, go = threading.Event(), threading.Event()

    def think(**kwargs: Any) -> None:
        thinking.set()
        assert go.wait(THREAD_TIMEOUT_SECONDS)

    agent.script(think)
    return thinking, go


@pytest.fixture
def race_channel_factory(transactional_db, scripted_agent):
    """Makes a workspace with `credits`, an API channel and a key. The channel's agent (1 credit a reply) is
    the scripted one (tests/agents.py), answering as the built-in agent unless the test scripts it; its
    `delay` makes concurrent requests overlap while it thinks."""

    def make(*, credits: int):
        workspace = WorkspaceFactory.create()
        credits_grant(workspace=workspace, amount=credits, note="race test credits")
        channel = ChannelFactory.create(workspace=workspace)
        assert channel.agent is not None
        document_for(channel.agent, title="Can I get a refund?", text="Yes, within 30 days of purchase.")
        scripted_agent.take_over(channel.agent)
        return channel, api_key_for(workspace)[1]

    return make
