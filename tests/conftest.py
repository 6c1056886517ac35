import json
import os

import pytest
import redis
from django.conf import settings
from django.core.management import execute_from_command_line
from django.db import connection, connections
from django.db.backends.signals import connection_created

from api.flow import writes
from billing.credits import credits_grant
from config.broker import broker_outage, cache_outage
from conversations.agents.base import get_backend
from tests.agents import SCRIPTED_BACKEND, SCRIPTED_PROVIDER, ScriptedAgent
from tests.factories import ChannelFactory, KnowledgeEntryFactory, WorkspaceFactory, api_key_for

SEED_TEXT = {
    "content": {"text": {"body": "Hello, how can I help you?"}},
    "type": "TEXT",
    "contactIdentifier": "user@example.com",
    "contactName": "User Name",
}


requires_redis = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (set REDIS_URL=redis://...)")


class StatementAfterCommit(AssertionError):
    """A statement sent after the COMMIT inside a statement (api/flow/writes.py), in the same atomic block."""


def commit_last_guard(execute, sql, params, many, context):
    """An execute wrapper that fails a statement sent after the COMMIT inside a statement in the same atomic
    block (docs/architecture.md, "Statements per message"): that statement would run in a transaction of its
    own that the block then commits, or outside any. The block is known by the outermost Atomic object and
    ends with its commit (an on-commit hook) or when that object is no longer the outermost."""
    database = context["connection"]
    after = getattr(database, "_committed_in_statement", None)
    if after is not None:
        if database.atomic_blocks and database.atomic_blocks[0] is after:
            raise StatementAfterCommit(f"a statement after the COMMIT sent inside the last one: {sql[:200]}")
        database._committed_in_statement = None
    result = execute(sql, params, many, context)
    if isinstance(sql, str) and sql.endswith(f"; {writes.COMMIT_SQL}") and database.atomic_blocks:
        database._committed_in_statement = database.atomic_blocks[0]
        database.on_commit(lambda: setattr(database, "_committed_in_statement", None))
    return result


@pytest.fixture(autouse=True)
def _nothing_after_the_commit_in_a_statement():
    """Every test's connections, its threads' too, run `commit_last_guard`."""

    def install(sender, connection, **kwargs):
        if commit_last_guard not in connection.execute_wrappers:
            connection.execute_wrappers.append(commit_last_guard)

    for database in connections.all(initialized_only=True):
        install(None, database)
    connection_created.connect(install)
    try:
        yield
    finally:
        connection_created.disconnect(install)
        for database in connections.all(initialized_only=True):
            if commit_last_guard in database.execute_wrappers:
                database.execute_wrappers.remove(commit_last_guard)


@pytest.fixture(autouse=True)
def _redis_outages_forgotten():
    """A test that found Redis down leaves this process's back-off (config/broker.py) to no later test."""
    yield
    broker_outage.clear()
    cache_outage.clear()


def broker_keys_delete() -> None:
    """Deletes this test worker's Redis keys (its REDIS_KEY_PREFIX: the broker's queues, the cache), not other
    workers' running tests'."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    if not settings.REDIS_KEY_PREFIX:
        client.flushdb()
    elif keys := list(client.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}*")):
        client.delete(*keys)


def error_of(response, *, status: int | None = None) -> dict:
    """The contract's error body, checked: exactly success=false and error{code, message, details}, with a
    message that is a sentence (and, given `status`, that status)."""
    if status is not None:
        assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False
    assert set(body) == {"success", "error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"].endswith(".")
    return body["error"]


class Api:
    """A thin client for the messages endpoint."""

    def __init__(self, client, channel, key):
        self.client, self.channel, self.key = client, channel, key

    def post(
        self,
        body=None,
        *,
        channel_id=None,
        key=None,
        idempotency_key=None,
        raw=None,
        content_type="application/json",
        **headers,
    ):
        if key is None:
            key = self.key
        if key:
            headers["HTTP_X_API_KEY"] = key
        if idempotency_key is not None:
            headers["HTTP_X_IDEMPOTENCY_KEY"] = idempotency_key
        data = raw if raw is not None else json.dumps(SEED_TEXT if body is None else body)
        return self.client.post(
            f"/api/v1/channels/{channel_id or self.channel.pk}/messages",
            data=data,
            content_type=content_type,
            **headers,
        )


@pytest.fixture
def workspace(db):
    workspace = WorkspaceFactory()
    credits_grant(workspace=workspace, amount=100, note="test credits")
    workspace.refresh_from_db()
    return workspace


@pytest.fixture
def channel(workspace):
    channel = ChannelFactory(workspace=workspace)
    KnowledgeEntryFactory(
        agent=channel.agent, question="How long does shipping take?", answer="Orders ship within 2 business days."
    )
    KnowledgeEntryFactory(
        agent=channel.agent, question="Can I get a refund?", answer="Yes, within 30 days of purchase."
    )
    return channel


@pytest.fixture
def scripted_agent(settings) -> ScriptedAgent:
    """The scripted backend (tests/agents.py), registered in settings.AGENT_BACKENDS for this test and
    reset; `scripted_agent.take_over(agent)` points an agent row at it."""
    settings.AGENT_BACKENDS = {**settings.AGENT_BACKENDS, SCRIPTED_PROVIDER: SCRIPTED_BACKEND}
    backend = get_backend(SCRIPTED_PROVIDER)
    assert isinstance(backend, ScriptedAgent)
    backend.reset()
    return backend


@pytest.fixture
def api_key(workspace):
    return api_key_for(workspace)[1]


@pytest.fixture
def api(client, channel, api_key):
    return Api(client, channel, api_key)


_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


@pytest.fixture
def assert_statements():
    """Count the statements that do work, the same on every backend: SQLite logs BEGIN/COMMIT and the
    test's wrapping transaction adds SAVEPOINTs, neither of which PostgreSQL's count would show."""
    from contextlib import contextmanager

    from django.test.utils import CaptureQueriesContext

    @contextmanager
    def check(expected: int):
        with CaptureQueriesContext(connection) as context:
            yield context
        statements = [
            q["sql"] for q in context.captured_queries if not q["sql"].lstrip().upper().startswith(_TRANSACTION_CONTROL)
        ]
        assert len(statements) == expected, f"{len(statements)} statements:\n" + "\n".join(
            sql[:160] for sql in statements
        )

    return check


def assert_books_hold() -> None:
    """What a fault must never break: no inbound message PENDING past its lease; in each workspace that has
    messages, the balance the sum of its ledger and the reserved credits those of its pending messages; no
    message answered twice."""
    from django.db.models import Count, Sum
    from django.utils import timezone

    from billing.models import UsageLedgerEntry
    from channels_app.models import Workspace
    from conversations.models import Message

    stuck = Message.objects.filter(
        direction=Message.Direction.INBOUND, status=Message.Status.PENDING, lease_until__lt=timezone.now()
    )
    assert not stuck.exists(), list(stuck.values_list("pk", flat=True))
    for workspace in Workspace.objects.filter(pk__in=Message.objects.values("conversation__workspace_id")):
        ledger = UsageLedgerEntry.objects.filter(workspace=workspace).aggregate(total=Sum("delta"))["total"] or 0
        assert workspace.credit_balance == ledger, (workspace.pk, workspace.credit_balance, ledger)
        pending = Message.objects.filter(conversation__workspace=workspace, status=Message.Status.PENDING)
        assert workspace.credit_reserved == (pending.aggregate(total=Sum("credits_reserved"))["total"] or 0)
    twice = (
        Message.objects.filter(direction=Message.Direction.OUTBOUND)
        .values("reply_to_id", "part")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
    )
    assert not twice.exists(), list(twice)


@pytest.fixture
def manage_py(monkeypatch, capsys):
    """Run a command as `manage.py` does, for its exit status and output (the test's connection is kept)."""
    monkeypatch.setattr(connections, "close_all", lambda: None)

    def run(*args) -> tuple[int, str, str]:
        try:
            execute_from_command_line(["manage.py", *args])
            code = 0
        except SystemExit as exited:
            code = exited.code if isinstance(exited.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
