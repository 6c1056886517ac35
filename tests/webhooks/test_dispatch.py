"""How deliveries leave the process after commit: with no broker, background threads of the web process
(never the request); with Redis, a real Celery worker; and two workers never send one attempt twice."""

import os
import threading
import time

import pytest
from django.db import connection
from django.test import Client

from billing.credits import credits_grant
from config import celery_app
from tests.conftest import Api, requires_redis
from tests.factories import ChannelFactory, WorkspaceFactory, api_key_for
from tests.webhooks.conftest import Reply, verified
from webhooks.delivery import delivery_attempt
from webhooks.models import WebhookAttempt, WebhookDelivery
from webhooks.services import event_emit, webhook_set
from webhooks.tasks import webhooks_sweep_task

WAIT_SECONDS = 30  # generous: the 2 cores are shared; the outcome is asserted, not the speed

# The background threads write while the test's thread reads. pytest-django's SQLite test database lives in
# memory with one cache shared by all threads, whose table locks fail at once ("database table is locked")
# instead of waiting; a file database, as `make run` uses (WAL and a 20 s timeout), waits like PostgreSQL.
threads_write_beside_the_test = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
    reason="needs PostgreSQL (set DATABASE_URL=postgres://...): the in-memory SQLite test database fails a "
    "thread's write beside another thread's read at once instead of waiting for it",
)


def wait_until(predicate, *, seconds: float = WAIT_SECONDS, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.05)


def committed_api() -> Api:
    workspace = WorkspaceFactory.create()
    credits_grant(workspace=workspace, amount=100, note="test credits")
    channel = ChannelFactory.create(workspace=workspace)
    return Api(Client(), channel, api_key_for(workspace)[1])


@pytest.fixture
def local_sender(settings):
    """The background sender of a process without a broker, on (the default outside the tests), sweeping every
    second; off again and its sweep ended before the test's data goes. Its threads belong to the process:
    left sweeping, a cycle begun in this test claims and sends a later test's delivery (a third racer in
    the race below), or records an attempt of a delivery the teardown has already deleted."""
    settings.WEBHOOK_LOCAL_SENDER = True
    settings.WEBHOOK_SWEEP_SECONDS = 1
    yield
    settings.WEBHOOK_LOCAL_SENDER = False
    sweeping = lambda: any(thread.name == "webhook-sweep" for thread in threading.enumerate())  # noqa: E731
    wait_until(lambda: not sweeping(), what="the local sweep stopped")
    leased = WebhookDelivery.objects.filter(lease_until__isnull=False)
    wait_until(lambda: not leased.exists(), what="the local sender's attempts ended")


def delivered(count: int = 1):
    return lambda: WebhookDelivery.objects.filter(status="SUCCEEDED").count() >= count


@threads_write_beside_the_test
@pytest.mark.django_db(transaction=True)
def test_without_a_broker_a_slow_receiver_never_holds_the_request(receiver, settings, local_sender):
    # given: no broker (tasks eager, as without REDIS_URL) and a receiver that takes 4 s to answer
    assert celery_app.conf.task_always_eager
    settings.WEBHOOK_TIMEOUT_SECONDS = 20.0
    receiver.plan.append(Reply(200, b"slow ok", delay=4))
    api = committed_api()
    secret = webhook_set(channel_id=api.channel.pk, url=receiver.url)

    # when
    response = api.post()

    # then: the request answered before the receiver did; a background thread delivers it
    assert response.status_code == 200
    assert not receiver.answered.is_set()
    wait_until(delivered(), what="the background thread delivered the event")
    (received,) = receiver.requests
    assert verified(received, secret)["data"] == response.json()


@threads_write_beside_the_test
@pytest.mark.django_db(transaction=True)
def test_without_a_broker_the_local_sweep_retries(receiver, local_sender):
    # given: the first attempt fails; the local sweep runs every second (the first retry is due after 5 s)
    receiver.plan.append(Reply(500, b"not yet"))
    api = committed_api()
    webhook_set(channel_id=api.channel.pk, url=receiver.url)

    # when
    assert api.post().status_code == 200

    # then
    wait_until(delivered(), what="the retry delivered the event")
    assert [a.status_code for a in WebhookAttempt.objects.order_by("number")] == [500, 200]
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


@requires_redis
@threads_write_beside_the_test
@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_on_redis_delivers_after_commit_and_from_the_sweep(receiver):
    """Through Redis to a worker in a thread of this process (so it sees the test database); the request
    only queues the task."""
    from celery.contrib.testing.worker import start_worker

    # given
    api = committed_api()
    secret = webhook_set(channel_id=api.channel.pk, url=receiver.url)
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    try:
        with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=20):
            # when: a message is answered
            response = api.post()

            # then: the worker delivered its event
            assert response.status_code == 200
            wait_until(delivered(1), what="the worker delivered the event")
            assert verified(receiver.requests[0], secret)["data"] == response.json()

            # when: an event whose hand-over was lost (a broker outage at its commit) and the beat's sweep
            event = event_emit(channel_id=api.channel.pk, type="conversation.closed", data={"conversation": {}})
            webhooks_sweep_task.delay()

            # then: the sweep queued it and the worker delivered it
            wait_until(delivered(2), what="the sweep's task delivered the event")
    finally:
        celery_app.conf.task_always_eager = eager
    assert receiver.requests[1].headers["webhook-id"] == event.pk
    assert len(receiver.requests) == 2


def test_the_beat_schedule_sweeps_webhooks(settings):
    entry = celery_app.conf.beat_schedule["webhooks-sweep"]
    assert entry["task"] == webhooks_sweep_task.name == "webhooks.tasks.webhooks_sweep_task"
    assert entry["schedule"] == settings.WEBHOOK_SWEEP_SECONDS
    assert webhooks_sweep_task.name in celery_app.tasks


@pytest.mark.django_db(transaction=True)
def test_workers_racing_for_one_delivery_send_it_once(receiver, settings):
    # given: a due delivery, and a receiver slow enough that every racer arrives while it is being sent
    receiver.plan.append(Reply(200, b"ok", delay=0.5))
    api = committed_api()
    webhook_set(channel_id=api.channel.pk, url=receiver.url)
    event = event_emit(channel_id=api.channel.pk, type="conversation.closed", data={"conversation": {}})
    delivery = event.deliveries.get()
    racers = 8
    barrier = threading.Barrier(racers)
    results: list = [None] * racers

    def race(index: int) -> None:
        try:
            barrier.wait(timeout=WAIT_SECONDS)
            results[index] = delivery_attempt(delivery_id=delivery.pk)
        finally:
            connection.close()

    # when
    threads = [threading.Thread(target=race, args=(index,)) for index in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)

    # then: one attempt won the claim, the others did nothing
    assert sum(result is not None for result in results) == 1
    assert len(receiver.requests) == 1
    assert list(WebhookAttempt.objects.values_list("number", "outcome")) == [(1, "succeeded")]
