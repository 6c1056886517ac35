"""Delivery attempts against a real receiver on loopback: signatures, retries, the schedule, refusals."""

import json
from datetime import timedelta

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from tests.webhooks.conftest import Receiver, Reply, make_due, verified
from webhooks.delivery import MAX_ATTEMPTS, RETRY_DELAYS, deliveries_due_claim, delivery_attempt
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEvent
from webhooks.services import conversation_closed_emit, event_emit, webhook_secret_rotate

CONVERSATION = {"id": "cv_1", "status": "CLOSED", "contactId": "ct_1", "closeReason": "api"}


def emit(channel, **data) -> WebhookDelivery:
    event = event_emit(
        channel_id=channel.pk, type="conversation.closed", data={"conversation": {**CONVERSATION, **data}}
    )
    assert event is not None  # the channel has a webhook
    return event.deliveries.get()


def attempt(delivery: WebhookDelivery) -> WebhookAttempt:
    made = delivery_attempt(delivery_id=delivery.pk)
    assert made is not None, "the delivery was not due or was leased"
    return made


def test_an_event_is_posted_signed_per_standard_webhooks(hooked, receiver):
    # given
    channel, secret = hooked
    event = conversation_closed_emit(channel_id=channel.pk, conversation=CONVERSATION)

    # when
    made = attempt(event.deliveries.get())

    # then: the reference verifier accepts it, and the body is the stored event, byte for byte
    (received,) = receiver.requests
    body = verified(received, secret)
    assert body["type"] == "conversation.closed"
    assert body["data"] == {"conversation": CONVERSATION}
    assert body["timestamp"].endswith("Z") and body["timestamp"][:19] == event.created_at.strftime("%Y-%m-%dT%H:%M:%S")
    assert received.body == event.payload.encode()
    assert received.headers["webhook-id"] == event.pk and event.pk.startswith("evt_")
    assert received.headers["webhook-signature"].startswith("v1,")
    assert received.headers["content-type"] == "application/json"
    assert received.path == "/hook"
    assert (made.outcome, made.status_code, made.number, made.response_excerpt) == ("succeeded", 200, 1, "ok")
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at, delivery.lease_owner) == (
        "SUCCEEDED",
        1,
        None,
        "",
    )
    assert delivery.delivered_at is not None


def test_a_wrong_secret_or_a_changed_body_does_not_verify(hooked, receiver):
    channel, secret = hooked
    attempt(emit(channel))
    (received,) = receiver.requests

    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(received.body, received.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(received.body.replace(b"cv_1", b"cv_2"), received.headers)


def test_retries_after_500s_carry_the_same_webhook_id(hooked, receiver):
    # given: a receiver that fails twice
    channel, secret = hooked
    receiver.plan.extend([Reply(500, b"database down"), Reply(503, b"busy")])
    delivery = emit(channel)

    # when
    first = attempt(delivery)
    assert delivery_attempt(delivery_id=delivery.pk) is None  # not due before its time
    make_due(delivery)
    second = attempt(delivery)
    make_due(delivery)
    third = attempt(delivery)

    # then
    assert [(a.number, a.outcome, a.status_code) for a in (first, second, third)] == [
        (1, "http_status", 500),
        (2, "http_status", 503),
        (3, "succeeded", 200),
    ]
    assert first.response_excerpt == "database down"
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert {r.body for r in receiver.requests} == {delivery.event.payload.encode()}
    for received in receiver.requests:
        verified(received, secret)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("SUCCEEDED", 3)


def test_no_answer_in_time_is_a_failed_attempt_retried_with_the_same_id(hooked, receiver, settings):
    # given: the first answer would come after the (lowered) timeout
    settings.WEBHOOK_TIMEOUT_SECONDS = 1.0
    channel, secret = hooked
    receiver.plan.append(Reply(200, b"too late", delay=4))
    delivery = emit(channel)

    # when
    first = attempt(delivery)
    make_due(delivery)
    second = attempt(delivery)

    # then
    assert (first.outcome, first.status_code) == ("timeout", None)
    assert first.duration_ms < 3500  # cut at the timeout, not held until the receiver's late answer
    assert (second.outcome, second.status_code) == ("succeeded", 200)
    first_id, second_id = (r.headers["webhook-id"] for r in receiver.requests)
    assert first_id == second_id == delivery.event_id


def test_the_schedule_backs_off_for_more_than_a_day_then_gives_up(hooked, receiver):
    # given: a receiver that always fails
    channel, _ = hooked
    receiver.plan.extend([Reply(500)] * MAX_ATTEMPTS)
    delivery = emit(channel)
    waits = []

    # when
    for _ in range(MAX_ATTEMPTS):
        made = attempt(delivery)
        delivery.refresh_from_db()
        if delivery.next_attempt_at is not None:
            finished = made.started_at + timedelta(milliseconds=made.duration_ms)
            waits.append(delivery.next_attempt_at - finished)
            make_due(delivery)

    # then: Svix's schedule, 8 attempts over more than 24 hours, then FAILED
    assert len(waits) == MAX_ATTEMPTS - 1 == len(RETRY_DELAYS) == 7
    for wait, expected in zip(waits, RETRY_DELAYS, strict=True):
        assert abs(wait - expected) < timedelta(seconds=1)
    assert sum(RETRY_DELAYS, timedelta()) >= timedelta(hours=24)
    assert RETRY_DELAYS[:3] == (timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30))
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("FAILED", MAX_ATTEMPTS, None)
    assert len(receiver.requests) == MAX_ATTEMPTS


def test_a_receiver_down_for_an_hour_then_up_gets_every_event(channel, settings):
    # given: the webhook points at a port where nothing listens yet
    from webhooks.services import webhook_set

    down = Receiver()
    secret = webhook_set(channel_id=channel.pk, url=down.url)
    deliveries = [emit(channel, id=f"cv_{n}") for n in range(3)]
    for delivery in deliveries:
        assert attempt(delivery).outcome == "connection_failed"

    # when: an hour later the receiver is up and the sweeps run (each retry waits its turn)
    up = Receiver(port=down.port).start()
    try:
        with time_machine.travel(timezone.now() + timedelta(hours=1)):
            for _ in range(MAX_ATTEMPTS):
                for delivery_id, token in deliveries_due_claim():
                    delivery_attempt(delivery_id=delivery_id, token=token)

            # then: everything arrived, once each, and verifies
            assert sorted(json.loads(r.body)["data"]["conversation"]["id"] for r in up.requests) == [
                "cv_0",
                "cv_1",
                "cv_2",
            ]
            for received in up.requests:
                verified(received, secret)
    finally:
        up.stop()
    assert set(WebhookDelivery.objects.values_list("status", "attempts")) == {("SUCCEEDED", 2)}


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(hooked, receiver):
    channel, _ = hooked
    receiver.plan.append(Reply(302, b"", headers={"Location": "/elsewhere"}))

    made = attempt(emit(channel))

    assert (made.outcome, made.status_code) == ("redirect", 302)
    assert [r.path for r in receiver.requests] == ["/hook"]
    assert WebhookDelivery.objects.get().status == "PENDING"


def test_a_private_address_is_refused_without_the_allow_list(hooked, receiver, settings):
    # given: the URL was allowed when it was set; now only media downloads may reach loopback
    channel, _ = hooked
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = []
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]

    made = attempt(emit(channel))

    assert made.outcome == "address_refused"
    assert receiver.requests == []


def test_the_answer_excerpt_is_bounded_and_stored_whatever_the_bytes(hooked, receiver):
    channel, _ = hooked
    receiver.plan.append(Reply(500, b"\x00\xff\xfe<html>" + "é".encode() * 3000))

    made = attempt(emit(channel))

    made.refresh_from_db()
    assert made.status_code == 500
    # the first KiB (9 bytes, then 507 two-byte characters and half of one), as text: NUL, invalid UTF-8
    # and the cut character replaced
    assert made.response_excerpt == "\ufffd" * 3 + "<html>" + "é" * 507 + "\ufffd"


def test_a_new_secret_signs_the_next_attempt_and_the_old_one_nothing(hooked, receiver):
    # given
    channel, old = hooked
    receiver.plan.append(Reply(500))
    delivery = emit(channel)
    attempt(delivery)

    # when
    new = webhook_secret_rotate(channel_id=channel.pk)
    make_due(delivery)
    attempt(delivery)

    # then
    before, after = receiver.requests
    verified(before, old)
    verified(after, new)
    with pytest.raises(WebhookVerificationError):
        verified(after, old)
    assert before.headers["webhook-id"] == after.headers["webhook-id"]


def test_a_leased_delivery_is_not_sent_twice_and_an_expired_lease_is_taken_over(hooked, receiver):
    # given: a worker claimed the delivery and died mid-send
    channel, _ = hooked
    delivery = emit(channel)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        lease_owner="a-dead-worker", lease_until=timezone.now() + timedelta(minutes=2), attempts=1
    )

    # when / then: nobody sends it while the lease runs
    assert deliveries_due_claim() == []
    assert delivery_attempt(delivery_id=delivery.pk) is None
    assert receiver.requests == []

    # when: the lease ran out
    WebhookDelivery.objects.filter(pk=delivery.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    ((delivery_id, token),) = deliveries_due_claim()
    assert deliveries_due_claim() == []  # reserved for its task now
    made = delivery_attempt(delivery_id=delivery_id, token=token)

    # then
    assert (made.number, made.outcome) == (2, "succeeded")
    assert len(receiver.requests) == 1


def test_an_event_is_written_with_its_transaction_or_not_at_all(hooked, django_capture_on_commit_callbacks):
    channel, _ = hooked

    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                emit(channel)
                raise RuntimeError("the caller's transaction fails")
    assert (WebhookEvent.objects.count(), WebhookDelivery.objects.count(), callbacks) == (0, 0, [])

    with django_capture_on_commit_callbacks() as callbacks:
        with transaction.atomic():
            emit(channel)
    assert (WebhookEvent.objects.count(), WebhookDelivery.objects.count(), len(callbacks)) == (1, 1, 1)


def test_a_channel_without_a_webhook_emits_nothing(channel):
    assert event_emit(channel_id=channel.pk, type="conversation.closed", data={"conversation": CONVERSATION}) is None
    assert WebhookEvent.objects.count() == 0


def test_a_removed_webhook_fails_its_pending_deliveries(hooked, receiver):
    channel, _ = hooked
    delivery = emit(channel)
    channel.webhook.delete()

    made = attempt(delivery)

    assert made.outcome == "no_webhook"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.next_attempt_at) == ("FAILED", None)
    assert receiver.requests == []


def test_the_signature_matches_the_standard_webhooks_specifications_example():
    """The specification's own test vector: the headers are signed exactly as it says."""
    from datetime import UTC, datetime

    from webhooks.delivery import attempt_headers

    headers = attempt_headers(
        event_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        payload='{"test": 2432232314}',
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        at=datetime.fromtimestamp(1614265330, UTC),
    )

    assert headers["webhook-id"] == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    assert headers["webhook-timestamp"] == "1614265330"
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
