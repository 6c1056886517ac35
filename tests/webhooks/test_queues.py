"""Webhook deliveries beside the answers of messages (README "Production", "Webhooks"): their own Celery queue,
and at most WEBHOOK_CHANNEL_MAX_IN_FLIGHT attempts of one channel sent at once, so that one tenant's receiver
that hangs neither holds the workers that answer messages nor every delivery worker."""

import os
import threading
import time

import pytest
import redis
from django.conf import settings

from config import celery_app
from tests.conftest import broker_keys_delete, requires_redis
from tests.factories import ChannelFactory
from tests.webhooks.conftest import Receiver, Reply
from webhooks.delivery import delivery_attempt
from webhooks.models import WebhookDelivery
from webhooks.services import event_emit, webhook_set


@requires_redis
def test_answers_and_deliveries_go_to_queues_of_their_own():
    from api.tasks import cleanup_task, message_answer_task
    from webhooks.tasks import webhook_deliver_task, webhooks_sweep_task

    queue = redis.Redis.from_url(os.environ["REDIS_URL"])
    broker_keys_delete()
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    try:
        message_answer_task.apply_async(("msg_x", "2026-01-01T00:00:00+00:00"))
        webhook_deliver_task.apply_async(("dl_x",))
        webhooks_sweep_task.apply_async()
        cleanup_task.apply_async()
        prefix = settings.REDIS_KEY_PREFIX  # kombu's global_keyprefix: each test worker its own queues
        assert tuple(queue.llen(f"{prefix}{name}") for name in ("answers", "webhooks", "celery")) == (1, 2, 1)
    finally:
        celery_app.conf.task_always_eager = eager
        broker_keys_delete()
    # and a worker started without -Q consumes all three
    assert set(celery_app.amqp.queues) == {"celery", "answers", "webhooks"}


@pytest.mark.django_db(transaction=True)
def test_a_channel_whose_receiver_hangs_holds_at_most_its_share_of_the_delivery_workers(workspace, settings):
    # given: a receiver that takes 3 s per event, six events for it, and another channel's fast receiver
    settings.WEBHOOK_CHANNEL_MAX_IN_FLIGHT = 2
    slow, fast = Receiver().start(), Receiver().start()
    slow.plan.extend(Reply(delay=3.0) for _ in range(6))
    try:
        hung_channel, other_channel = ChannelFactory(workspace=workspace), ChannelFactory(workspace=workspace)
        webhook_set(channel_id=hung_channel.pk, url=slow.url)
        webhook_set(channel_id=other_channel.pk, url=fast.url)
        hung = [event_emit(channel_id=hung_channel.pk, type="conversation.closed", data={"n": n}) for n in range(6)]
        other = event_emit(channel_id=other_channel.pk, type="conversation.closed", data={"n": 6})
        deliveries = [WebhookDelivery.objects.get(event=event).pk for event in [*hung, other]]

        # when: seven delivery workers take them up at once
        threads = [threading.Thread(target=delivery_attempt, kwargs={"delivery_id": pk}) for pk in deliveries]
        started = time.monotonic()
        for thread in threads:
            thread.start()

        # then: the other channel's event is delivered while the slow receiver still holds its two
        fast.wait_for(1, seconds=2.5)
        assert time.monotonic() - started < 2.5
        for thread in threads:
            thread.join(30)
        assert len(slow.requests) == 2
        # and the four put off wait for the sweep, none counted as an attempt
        put_off = WebhookDelivery.objects.filter(pk__in=deliveries[:6], attempts=0)
        assert put_off.count() == 4
        assert all(delivery.status == WebhookDelivery.Status.PENDING for delivery in put_off)
    finally:
        slow.stop()
        fast.stop()
