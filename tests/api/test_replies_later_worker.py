"""The asynchronous mode with real Celery workers on Redis (README "Replies later"): separate processes,
started here and stopped (or killed) by their pid, on this test's database and Redis database. The LLM is a
stand-in on loopback (tests/llm_stand_in.py) that the workers call.

The web side is this test's Django client, with Celery's eager mode turned off so the task goes through
Redis."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from api.models import IdempotencyRecord
from billing.models import UsageLedgerEntry
from channels_app.models import Workspace
from config import celery_app
from conversations.models import Message
from tests.conftest import SEED_TEXT, Api, assert_books_hold, broker_keys_delete, requires_redis
from tests.factories import AIAgentFactory, ChannelFactory
from tests.live_gunicorn import database_url_for_servers
from tests.llm_stand_in import StandIn, Step, start

pytestmark = [requires_redis, pytest.mark.django_db(transaction=True)]

KEY_VAR = "TEST_CHANNELS_LLM_API_KEY"
ASYNC = {"HTTP_PREFER": "respond-async"}
START_SECONDS = 90  # a worker imports Django and the OpenAI SDK; the machine may be shared
WAIT_SECONDS = 60


def wait_for(predicate, *, seconds: float = WAIT_SECONDS, what: str = ""):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    stand_in = StandIn()
    server = start(stand_in)
    yield stand_in
    for step in stand_in.steps:
        if step.hold is not None:
            step.hold.set()
    server.shutdown()


@pytest.fixture
def broker():
    """Redis's database of this test run, emptied (no task of an earlier run), and Celery sending to it."""
    broker_keys_delete()
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    yield
    celery_app.conf.task_always_eager = eager
    broker_keys_delete()


@pytest.fixture
def api(client, workspace, api_key, stand_in, monkeypatch) -> Api:
    monkeypatch.setenv(KEY_VAR, "sk-test")
    agent = AIAgentFactory.create(
        workspace=workspace, provider="openai", base_url=stand_in.url, model="test-model", api_key_env_var=KEY_VAR
    )
    return Api(client, ChannelFactory(workspace=workspace, agent=agent), api_key)


@contextmanager
def worker(tmp_path: Path, name: str, *args: str, **overrides: str) -> Iterator[subprocess.Popen]:
    """`celery -A config worker` (the README's command, without beat) on this test's database and Redis;
    it hands a dead worker's task on after 3 s, and looks for one every second. Stopped by its pid."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LLM_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DATABASE_URL": database_url_for_servers(),
            "PYTHONPATH": str(settings.BASE_DIR),
            KEY_VAR: "sk-test",
            "CELERY_VISIBILITY_TIMEOUT_SECONDS": "3",
            "CELERY_UNACKED_RESTORE_SECONDS": "1",
            "LOG_LEVEL": "INFO",
            **overrides,
        }
    )
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-n", f"{name}@%h", *args],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_SECONDS
        while "ready" not in log_path.read_text(errors="replace"):
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"the worker did not start within {START_SECONDS} s"
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def say(body: str) -> dict:
    return {**SEED_TEXT, "content": {"text": {"body": body}}}


def replies_to(message_id: str) -> list[str]:
    return [
        content["text"]["body"]
        for content in Message.objects.filter(reply_to_id=message_id).order_by("part").values_list("content", flat=True)
    ]


def test_async_messages_go_through_redis_to_workers_and_are_answered_in_order(api, broker, stand_in, tmp_path):
    # given: two workers' worth of concurrency, and a slow first answer, so the second message's task runs
    # beside the first and must wait for its turn
    stand_in.script(Step("One.", pause=1.5), "Two.")
    with worker(tmp_path, "w1", "--pool", "threads", "--concurrency", "2"):
        # when
        responses = [api.post(say(text), **ASYNC) for text in ("first", "second")]

        # then: 202 at once; both answered by the workers, in order, the second seeing the first's answer
        assert [response.status_code for response in responses] == [202, 202]
        ids = [response.json()["messageId"] for response in responses]
        wait_for(
            lambda: all(Message.objects.get(pk=pk).status == Message.Status.ANSWERED for pk in ids),
            what="both answered",
        )
    assert [replies_to(pk) for pk in ids] == [["One."], ["Two."]]
    assert [request["messages"][-1]["content"] for request in stand_in.requests] == ["first", "second"]
    assert [message["content"] for message in stand_in.requests[1]["messages"][-3:]] == ["first", "One.", "second"]
    assert UsageLedgerEntry.objects.filter(message_id__in=ids).count() == 2


def test_a_worker_killed_mid_answer_leaves_its_task_to_another_worker_which_answers_once(
    api, broker, stand_in, workspace, tmp_path
):
    # given: a worker whose agent call hangs. The threads pool, not solo: solo's event loop waits for the
    # running task, so even an early acknowledgement would not reach Redis before the kill, and the test
    # would pass without the late one.
    stand_in.script(Step("Lost with the worker.", hold=threading.Event()), "Answered after all.")
    with worker(tmp_path, "doomed", "--pool", "threads", "--concurrency", "1") as doomed:
        response = api.post(SEED_TEXT, idempotency_key="k-killed", **ASYNC)
        assert response.status_code == 202, response.content
        message_id = response.json()["messageId"]
        stand_in.wait_for_requests(1)

        # when: the worker is killed mid-call (no acknowledgement, no failure recorded)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=30)
    message = Message.objects.get(pk=message_id)
    assert message.status == Message.Status.PENDING
    assert message.lease_until > timezone.now()  # the dead run's lease, taken when its task started
    # Its lease runs out (lease_seconds: at least half a minute here); moved back instead of waited for.
    Message.objects.filter(pk=message_id).update(lease_until=timezone.now() - timedelta(seconds=1))
    IdempotencyRecord.objects.update(locked_until=timezone.now() - timedelta(seconds=1))

    # then: a new worker gets the unacknowledged task from Redis and answers the message, once
    with worker(tmp_path, "heir", "--pool", "solo"):
        wait_for(
            lambda: Message.objects.get(pk=message_id).status == Message.Status.ANSWERED, what="answered by the heir"
        )
        wait_for(lambda: IdempotencyRecord.objects.get().state == IdempotencyRecord.State.COMPLETED, what="key")
    assert replies_to(message_id) == ["Answered after all."]
    assert len(stand_in.requests) == 2
    assert UsageLedgerEntry.objects.filter(message_id=message_id).count() == 1
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (99, 0)
    # and a retry with the key gets the stored 200 body
    replayed = api.post(SEED_TEXT, idempotency_key="k-killed", **ASYNC)
    assert replayed.status_code == 200, replayed.content
    assert replayed.json()["aiMessages"][0]["content"]["text"]["body"] == "Answered after all."
    assert Workspace.objects.get(pk=workspace.pk).credit_balance == 99


@contextmanager
def database_refusing_connections() -> Iterator[Callable[[], None]]:
    """The test database refuses new connections (as during a restart or a failover), and every backend on it
    but this test's own is terminated; yields the function that ends the outage (called on the way out too).
    Only this test's database is touched (by its name), from a connection to the maintenance database."""
    import psycopg
    from django.db import connection

    params = connection.settings_dict
    name = params["NAME"]
    connection.ensure_connection()
    own = connection.connection.info.backend_pid
    admin = psycopg.connect(
        dbname="postgres", user=params["USER"], password=params["PASSWORD"], host=params["HOST"],
        port=params["PORT"], autocommit=True,
    )  # fmt: skip

    def end() -> None:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    try:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> %s", [name, own]
        )
        yield end
    finally:
        end()
        admin.close()


def test_a_task_taken_up_while_the_database_is_down_waits_it_out_and_answers_its_message(
    api, broker, stand_in, workspace, tmp_path
):
    # given: an accepted message whose task waits in Redis
    stand_in.script("Answered after the outage.")
    response = api.post(SEED_TEXT, idempotency_key="k-outage", **ASYNC)
    assert response.status_code == 202, response.content
    message_id = response.json()["messageId"]

    # when: a worker takes the task up while the database refuses every connection
    # (longer than the worker's pool waits for a connection: the run gets the error, not just a slow start)
    with (
        database_refusing_connections() as outage_end,
        worker(tmp_path, "patient", "--pool", "solo", DB_POOL_TIMEOUT="1", DB_RETRY_MAX_SECONDS="1"),
    ):
        queue = redis.Redis.from_url(os.environ["REDIS_URL"])
        wait_for(lambda: queue.llen("answers") == 0, what="the task taken up")
        time.sleep(4)  # the worker's run meets the refused connections
        outage_end()

        # then: once the database is back, the same worker answers the message, once
        wait_for(
            lambda: Message.objects.get(pk=message_id).status == Message.Status.ANSWERED, what="answered after all"
        )
        wait_for(lambda: IdempotencyRecord.objects.get().state == IdempotencyRecord.State.COMPLETED, what="key")
    assert replies_to(message_id) == ["Answered after the outage."]
    assert_books_hold()
    assert "interrupted by the database" in (tmp_path / "patient.log").read_text(errors="replace")
    assert UsageLedgerEntry.objects.filter(message_id=message_id).count() == 1
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (99, 0)


def test_a_receiver_that_hangs_holds_only_delivery_workers_never_the_answers(
    api, broker, stand_in, workspace, tmp_path, settings
):
    from tests.factories import WorkspaceFactory
    from tests.webhooks.conftest import Receiver, Reply
    from webhooks.services import event_emit, webhook_set

    # given: another tenant's receiver that hangs 15 s on each of twelve events
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    slow = Receiver().start()
    slow.plan.extend(Reply(delay=15.0) for _ in range(12))
    other = ChannelFactory(workspace=WorkspaceFactory())
    webhook_set(channel_id=other.pk, url=slow.url)
    stand_in.script("Answered beside the hung receiver.")
    delivering = {"WEBHOOK_ALLOW_PRIVATE_HOSTS": "127.0.0.1", "SECRET_KEY": settings.SECRET_KEY}
    try:
        # the README's two workers: deliveries, and answers (with the clean-ups)
        with (
            worker(tmp_path, "deliveries", "-Q", "webhooks", "--pool", "threads", "--concurrency", "4", **delivering),
            worker(tmp_path, "answers", "-Q", "answers,celery", "--pool", "threads", "--concurrency", "2"),
        ):
            for n in range(12):
                event_emit(channel_id=other.pk, type="conversation.closed", data={"conversation": {"n": n}})
            slow.wait_for(2)  # the receiver holds its share of the delivery workers

            # when: a message of this workspace asks for its answer later
            started = time.monotonic()
            response = api.post(SEED_TEXT, **ASYNC)
            assert response.status_code == 202, response.content
            message_id = response.json()["messageId"]

            # then: answered while the receiver still hangs, by the answers' worker
            wait_for(
                lambda: Message.objects.get(pk=message_id).status == Message.Status.ANSWERED,
                seconds=15,
                what="answered beside the hung receiver",
            )
            assert time.monotonic() - started < 15
            # and the hung channel never had more than its share of attempts at once
            assert len(slow.requests) == 2
    finally:
        slow.stop()
    assert replies_to(message_id) == ["Answered beside the hung receiver."]
    assert_books_hold()
