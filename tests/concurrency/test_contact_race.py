"""Concurrent first messages of one new contact (PostgreSQL): one contact, one open conversation, every
message kept at its own position and answered in order."""

import pytest

from api.flow import messaging
from billing.models import UsageLedgerEntry
from contacts.models import Contact
from conversations.models import Conversation, Message
from tests.concurrency.conftest import run_together
from tests.conftest import SEED_TEXT

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS = 50


def body(index: int) -> dict:
    return {**SEED_TEXT, "content": {"text": {"body": f"Question number {index}"}}}


def test_fifty_first_messages_of_a_new_contact_make_one_contact_and_one_conversation(
    race_channel_factory, scripted_agent, monkeypatch
):
    # given: a contact the workspace has never seen, and a fast agent (the conversation's messages are
    # answered one after another, so a slow agent would only multiply the test's time)
    channel, key = race_channel_factory(credits=100)
    # A waiting message looks for its turn at most every 0.5 s in production; fifty in a row would spend
    # ~20 s just between looks. Looking more often changes no outcome (only when a waiter notices its turn).
    monkeypatch.setattr(messaging, "_TURN_POLL_MAX", 0.05)

    # when: fifty different messages of that contact start together, without idempotency keys
    responses = run_together(REQUESTS, lambda index, api: api.post(body(index)), channel=channel, key=key)

    # then: every message was accepted and answered
    assert [r.status_code for r in responses] == [200] * REQUESTS, [
        r.content for r in responses if r.status_code != 200
    ][:3]
    bodies = [r.json() for r in responses]
    contact = Contact.objects.get()
    conversation = Conversation.objects.get()
    assert (conversation.status, conversation.contact_id, conversation.last_seq) == ("ACTIVE", contact.pk, REQUESTS)
    assert {b["contactId"] for b in bodies} == {contact.pk}
    assert {b["conversationId"] for b in bodies} == {conversation.pk}

    # and each message is kept once, at its own position, without gaps
    inbound = list(Message.objects.filter(direction="INBOUND").order_by("seq"))
    assert [m.seq for m in inbound] == list(range(1, REQUESTS + 1))
    assert sorted(m.content["text"]["body"] for m in inbound) == sorted(
        body(i)["content"]["text"]["body"] for i in range(REQUESTS)
    )
    assert {m.pk for m in inbound} == {b["messageId"] for b in bodies}
    assert all(m.status == "ANSWERED" for m in inbound)
    replies = Message.objects.filter(direction="OUTBOUND")
    assert sorted(replies.values_list("seq", "part", "reply_to_id")) == [(m.seq, 1, m.pk) for m in inbound]

    # and answered in order: each message's agent call saw the message before it and that one's reply
    assert scripted_agent.count == REQUESTS
    history_of = {call.content["text"]["body"]: call.history for call in scripted_agent.calls}
    for earlier, later in zip(inbound, inbound[1:], strict=False):
        history = history_of[later.content["text"]["body"]]
        assert history[-3].role == "user" and history[-3].content == earlier.content, later.seq
        assert history[-2].role == "assistant", later.seq

    # and the credits add up
    workspace = channel.workspace
    workspace.refresh_from_db()
    ledger = sum(UsageLedgerEntry.objects.filter(workspace=workspace).values_list("delta", flat=True))
    assert (workspace.credit_balance, workspace.credit_reserved, ledger) == (50, 0, 50)


SPELLINGS = ["Jane.Doe@Example.com", "jane.doe@example.com", " JANE.DOE@example.COM", "+1 (555) 010-0", "+15550100"]


def test_first_messages_of_one_contact_under_several_spellings_make_one_contact_and_one_conversation(
    race_channel_factory, scripted_agent, monkeypatch
):
    # given: a contact the workspace has never seen, written two ways (and a phone contact, two ways)
    channel, key = race_channel_factory(credits=100)
    scripted_agent.take_over(channel.agent)
    monkeypatch.setattr(messaging, "_TURN_POLL_MAX", 0.05)
    count = 20

    # when: their first messages start together, each spelling several times
    responses = run_together(
        count,
        lambda index, api: api.post(
            {**body(index), "contactIdentifier": SPELLINGS[index % len(SPELLINGS)], "contactName": f"Name {index}"}
        ),
        channel=channel,
        key=key,
    )

    # then: every message was answered, and each person is one contact with one conversation
    assert [r.status_code for r in responses] == [200] * count, [r.content for r in responses if r.status_code != 200]
    contacts = {contact.identifier_key: contact for contact in Contact.objects.all()}
    assert set(contacts) == {"jane.doe@example.com", "+15550100"}
    assert Conversation.objects.count() == 2
    for index, response in enumerate(responses):
        identifier = SPELLINGS[index % len(SPELLINGS)]
        owner = contacts["+15550100" if identifier.strip().startswith("+") else "jane.doe@example.com"]
        assert response.json()["contactId"] == owner.pk
    # the contact keeps one of the spellings it was first sent with
    assert contacts["jane.doe@example.com"].identifier in {s.strip() for s in SPELLINGS[:3]}
    assert contacts["+15550100"].identifier in SPELLINGS[3:]
    assert Message.objects.filter(direction="INBOUND").count() == count
