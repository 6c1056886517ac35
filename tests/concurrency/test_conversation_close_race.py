"""Closes racing messages (PostgreSQL): a close through the API, the clean-up's inactivity close and the
accept phase's own, against new messages of the same contact. Whatever the interleaving: at most one active
conversation per contact and channel, each close done and announced once, no inbound message added to a
conversation after its close, and every message answered once."""

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from api.flow import messaging
from api.maintenance.cleanup import idle_conversations_close
from conversations.models import Conversation, Message
from conversations.services import conversation_close
from tests.concurrency.conftest import THREAD_TIMEOUT_SECONDS, in_thread, run_together, wait_for_lock_waiters
from tests.conftest import SEED_TEXT, Api
from tests.webhooks.conftest import Receiver
from webhooks.models import WebhookEvent
from webhooks.services import webhook_set

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 8


@pytest.fixture
def hooked_channel(race_channel_factory, settings, monkeypatch):
    """(channel, key): a channel whose webhook points at a real receiver on loopback, so every close writes
    its event."""
    monkeypatch.setattr(messaging, "_TURN_POLL_MAX", 0.05)
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    receiver = Receiver().start()
    channel, key = race_channel_factory(credits=1000)
    webhook_set(channel_id=channel.pk, url=receiver.url)
    yield channel, key
    receiver.stop()


def message(contact: str, body: str = "Can I get a refund?") -> dict:
    return {**SEED_TEXT, "contactIdentifier": contact, "content": {"text": {"body": body}}}


def close_events_of(conversation_id: str) -> list[dict]:
    events = [
        json.loads(payload)
        for payload in WebhookEvent.objects.filter(type="conversation.closed").values_list("payload", flat=True)
    ]
    return [event for event in events if event["data"]["conversation"]["id"] == conversation_id]


def active_of(contact_id: str) -> list[Conversation]:
    return list(Conversation.objects.filter(contact_id=contact_id, status="ACTIVE"))


def test_two_closes_racing_a_new_message(hooked_channel, scripted_agent):
    channel, key = hooked_channel
    for round_ in range(ROUNDS):
        # given: a contact's conversation with one exchange
        contact = f"close-race-{round_}@example.com"
        first = Api(Client(), channel, key).post(message(contact)).json()
        old_id = first["conversationId"]

        # when: two closes and the contact's next message start together
        def work(index: int, api: Api, old_id=old_id, contact=contact, round_=round_):
            if index < 2:
                return api.client.post(f"/api/v1/conversations/{old_id}/close", HTTP_X_API_KEY=key)
            return api.post(message(contact, f"Round {round_} again"))

        close_a, close_b, reply = run_together(3, work, channel=channel, key=key)

        # then: closed once, announced once, both closes answer the same closed conversation
        assert (close_a.status_code, close_b.status_code, reply.status_code) == (200, 200, 200), reply.content
        # (lastMessageAt may differ: a message accepted before the close gets its reply recorded meanwhile)
        a, b = (response.json()["conversation"] for response in (close_a, close_b))
        assert {**a, "lastMessageAt": None} == {**b, "lastMessageAt": None}
        assert (a["status"], a["closeReason"]) == ("CLOSED", "api")
        old = Conversation.objects.get(pk=old_id)
        assert (old.status, old.close_reason) == ("CLOSED", "api")
        assert len(close_events_of(old_id)) == 1
        # and the message was answered once, in the old conversation (accepted before the close) or a new one
        body = reply.json()
        inbound = Message.objects.get(pk=body["messageId"])
        assert (inbound.status, inbound.replies.count()) == ("ANSWERED", 1)
        if body["conversationId"] == old_id:
            assert old.last_seq == 2 and active_of(first["contactId"]) == []
        else:
            (new,) = active_of(first["contactId"])
            assert (new.pk, new.last_seq) == (body["conversationId"], 1)
            assert old.last_seq == 1 and old.messages.filter(direction="INBOUND").count() == 1


def test_the_clean_up_s_inactivity_close_racing_a_new_message(hooked_channel, scripted_agent):
    channel, key = hooked_channel
    for round_ in range(ROUNDS):
        # given: a conversation idle for two days (the channel's timeout is one)
        contact = f"idle-race-{round_}@example.com"
        first = Api(Client(), channel, key).post(message(contact)).json()
        old_id = first["conversationId"]
        Conversation.objects.filter(pk=old_id).update(last_message_at=timezone.now() - timedelta(days=2))

        # when: the clean-up and the contact's next message start together
        def work(index: int, api: Api, contact=contact, round_=round_):
            if index == 0:
                return idle_conversations_close(now=timezone.now())
            return api.post(message(contact, f"Round {round_} again"))

        closed_by_cleanup, reply = run_together(2, work, channel=channel, key=key)

        # then: whichever closed it, it was closed once, for inactivity, and announced once
        old = Conversation.objects.get(pk=old_id)
        assert (old.status, old.close_reason) == ("CLOSED", "inactivity")
        assert closed_by_cleanup in (0, 1)
        assert len(close_events_of(old_id)) == 1
        # and the message went to a new conversation, with an empty history, and was answered once
        assert reply.status_code == 200, reply.content
        body = reply.json()
        (new,) = active_of(first["contactId"])
        assert (new.pk, new.last_seq) == (body["conversationId"], 1)
        assert old.messages.filter(direction="INBOUND").count() == 1
        assert Message.objects.get(pk=body["messageId"]).status == "ANSWERED"


def test_first_messages_after_a_close_open_one_new_conversation(hooked_channel, scripted_agent):
    channel, key = hooked_channel
    contact = "after-close@example.com"
    api = Api(Client(), channel, key)
    first = api.post(message(contact)).json()
    assert (
        api.client.post(f"/api/v1/conversations/{first['conversationId']}/close", HTTP_X_API_KEY=key).status_code == 200
    )
    count = 10

    # when: ten messages of the contact start together
    responses = run_together(
        count, lambda index, api: api.post(message(contact, f"Question {index}")), channel=channel, key=key
    )

    # then: one new conversation holds all ten, each answered once; the closed one got none
    assert [r.status_code for r in responses] == [200] * count, [r.content for r in responses if r.status_code != 200]
    (new,) = active_of(first["contactId"])
    assert {r.json()["conversationId"] for r in responses} == {new.pk}
    assert new.last_seq == count
    assert sorted(new.messages.filter(direction="INBOUND").values_list("seq", flat=True)) == list(range(1, count + 1))
    assert set(new.messages.filter(direction="INBOUND").values_list("status", flat=True)) == {"ANSWERED"}
    assert new.messages.filter(direction="OUTBOUND").count() == count
    assert Conversation.objects.get(pk=first["conversationId"]).messages.count() == 2


def test_a_message_that_waits_for_a_committing_close_goes_to_a_new_conversation(hooked_channel, scripted_agent):
    # given: a conversation, and a close that has closed it but not committed yet
    channel, key = hooked_channel
    contact = "waits-for-close@example.com"
    first = Api(Client(), channel, key).post(message(contact)).json()
    closed, release = threading.Event(), threading.Event()

    def close_and_hold() -> None:
        try:
            with transaction.atomic():
                conversation_close(
                    conversation_id=first["conversationId"],
                    workspace_id=channel.workspace_id,
                    reason="api",
                    now=timezone.now(),
                )
                closed.set()
                release.wait(THREAD_TIMEOUT_SECONDS)
        finally:
            connection.close()

    closer = threading.Thread(target=close_and_hold)
    closer.start()
    assert closed.wait(THREAD_TIMEOUT_SECONDS)

    # when: the contact's next message is accepted meanwhile: it still reads the conversation as active, and
    # waits on its row for the close to commit
    results: dict = {}
    poster = in_thread(results, "reply", lambda: Api(Client(), channel, key).post(message(contact, "Hello again")))
    wait_for_lock_waiters(1)
    release.set()
    closer.join(THREAD_TIMEOUT_SECONDS)
    poster.join(THREAD_TIMEOUT_SECONDS)

    # then: it found the conversation closed and opened a new one; nothing was added to the closed one
    reply = results["reply"]
    assert reply.status_code == 200, reply.content
    body = reply.json()
    assert body["conversationId"] != first["conversationId"]
    assert body["conversation"]["status"] == "ACTIVE"
    old = Conversation.objects.get(pk=first["conversationId"])
    assert (old.status, old.last_seq, old.messages.count()) == ("CLOSED", 1, 2)
    assert [item.content for item in scripted_agent.calls[-1].history] == [{"text": {"body": "Hello again"}}]
