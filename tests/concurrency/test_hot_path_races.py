"""Races a hostile integrator provokes against the accept phase's one statement (api/flow/writes.py, PostgreSQL):
an erasure committing while a message of the contact opens a new conversation, one idempotency key sent at
once with different bodies or after its record expired, and reservations larger than the charges."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from api.models import IdempotencyRecord
from billing.models import UsageLedgerEntry
from channels_app.models import AIAgent
from contacts.models import Contact
from conversations.agents.base import AgentReply
from conversations.models import Conversation, Message
from tests.concurrency.conftest import THREAD_TIMEOUT_SECONDS, books, in_thread, run_together, wait_for_lock_waiters
from tests.conftest import SEED_TEXT, Api
from tests.factories import ChannelFactory

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "hostile-%s-'quoted'-\\-key"  # psycopg binds it client-side: a `%s` in a value must stay a value


def message(identifier: str, text: str, **fields) -> dict:
    return {**SEED_TEXT, "contactIdentifier": identifier, "content": {"text": {"body": text}}, **fields}


# --- erasure -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["after-a-close", "on-another-channel"])
def test_a_message_opening_a_new_conversation_while_the_erasure_commits_keeps_nothing(
    race_channel_factory, scripted_agent, where
):
    """Found by this test: the accept phase read the contact before the erasure committed, then opened a new
    conversation for it (its foreign key is checked at commit, and an erased contact's row still exists), so
    the message and its reply stayed in an active conversation of the erased contact."""
    # given: a contact without a name, whose conversation is closed (or who writes on a second channel)
    channel, key = race_channel_factory(credits=100)
    api = Api(Client(), channel, key)
    first = api.post(message("eve@example.com", "first words", contactName=None)).json()
    target = channel
    if where == "after-a-close":
        closed = api.client.post(f"/api/v1/conversations/{first['conversationId']}/close", HTTP_X_API_KEY=key)
        assert closed.status_code == 200
    else:
        target = ChannelFactory(workspace=channel.workspace, agent=channel.agent)
    scripted_agent.script("REPLY-KEPT-AFTER-ERASURE")
    results: dict = {}

    # when: the erasure has cut the contact off but not committed (it waits for the old conversation's row,
    # which this test holds), and the contact's next message, with a name, is accepted meanwhile
    with transaction.atomic():
        Conversation.objects.select_for_update().get(pk=first["conversationId"])
        eraser = in_thread(
            results,
            "erase",
            lambda: Client().delete(f"/api/v1/contacts/{first['contactId']}", HTTP_X_API_KEY=key),
        )
        wait_for_lock_waiters(1)
        poster = in_thread(
            results,
            "post",
            lambda: Api(Client(), target, key).post(
                message("eve@example.com", "INBOUND-KEPT-AFTER-ERASURE", contactName="Eve Leaked")
            ),
        )
        wait_for_lock_waiters(2)  # the message waits for the erasure's lock on the contact
    eraser.join(THREAD_TIMEOUT_SECONDS)
    poster.join(THREAD_TIMEOUT_SECONDS)
    assert not eraser.is_alive() and not poster.is_alive()

    # then: the erasure answered, and the message was refused: nothing of it is kept anywhere
    assert results["erase"].status_code == 200, results["erase"].content
    assert results["post"].status_code == 409, results["post"].content
    assert results["post"].json()["error"]["code"] == "contact_erased"
    contact = Contact.objects.get(pk=first["contactId"])
    assert (contact.name, contact.erased_at is not None) == ("", True)
    conversations = Conversation.objects.filter(contact=contact)
    assert conversations.count() == 1 and not conversations.filter(erased_at=None).exists()
    texts = [str(content) for content in Message.objects.values_list("content", flat=True)]
    assert not [text for text in texts if "KEPT-AFTER-ERASURE" in text], texts
    assert scripted_agent.count == 1  # the first message's; the refused one never reached the agent
    assert books(channel.workspace) == (99, 0, 99)


# --- idempotency keys ------------------------------------------------------------------------------------------


def test_one_new_key_sent_at_once_with_different_bodies_answers_one_and_refuses_the_others(
    race_channel_factory, scripted_agent
):
    # given: an agent slow enough that the requests overlap
    channel, key = race_channel_factory(credits=100)
    scripted_agent.delay = 0.2
    count = 20

    # when: twenty different messages of one new contact carry the same new key
    responses = run_together(
        count,
        lambda index, api: api.post(message("+1 (555) 010-0", f"body {index}"), idempotency_key=KEY),
        channel=channel,
        key=key,
    )

    # then: one was answered; every other one was told that the key belongs to another request
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [422] * (count - 1), statuses
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 422} == {"idempotency_key_reused"}
    (answered,) = [r for r in responses if r.status_code == 200]
    inbound = Message.objects.get(direction="INBOUND")
    assert inbound.pk == answered.json()["messageId"] and scripted_agent.count == 1
    assert inbound.content == scripted_agent.calls[0].content
    record = IdempotencyRecord.objects.get()
    assert (record.key, record.state, bytes(record.response_body)) == (KEY, "COMPLETED", answered.content)
    assert books(channel.workspace) == (99, 0, 99)


@pytest.mark.parametrize("body_again", ["the same body", "a new body"])
def test_a_key_past_its_retention_sent_again_at_once_is_claimed_once(race_channel_factory, scripted_agent, body_again):
    # given: a key answered long ago, its record past its retention (the clean-up has not deleted it yet)
    channel, key = race_channel_factory(credits=100)
    api = Api(Client(), channel, key)
    old = api.post(message("old-key@example.com", "the same body"), idempotency_key=KEY)
    assert old.status_code == 200
    IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    scripted_agent.delay = 0.2
    count = 20

    # when: twenty requests with the key start together
    responses = run_together(
        count,
        lambda index, api: api.post(message("old-key@example.com", body_again), idempotency_key=KEY),
        channel=channel,
        key=key,
    )

    # then: exactly one ran as a new request; the others replayed its answer or were told to wait; none
    # got the forgotten answer
    fresh = [r for r in responses if r.status_code == 200 and "Idempotent-Replayed" not in r]
    assert len(fresh) == 1, sorted(r.status_code for r in responses)
    others = [r for r in responses if r is not fresh[0]]
    assert all(r.content == fresh[0].content or r.status_code == 409 for r in others), [
        r.content for r in others if r.status_code != 409
    ][:2]
    assert all(r.json()["error"]["code"] == "idempotency_in_progress" for r in others if r.status_code == 409)
    assert fresh[0].json()["messageId"] != old.json()["messageId"]
    assert Message.objects.filter(direction="INBOUND").count() == 2 and scripted_agent.count == 2
    record = IdempotencyRecord.objects.get()
    assert (record.message_id, bytes(record.response_body)) == (fresh[0].json()["messageId"], fresh[0].content)
    assert books(channel.workspace) == (98, 0, 98)


# --- credits ---------------------------------------------------------------------------------------------------


def test_reservations_larger_than_the_charges_never_overspend_and_the_ledger_chains(
    race_channel_factory, scripted_agent
):
    # given: an agent that reserves 3 credits a message (1 a reply, 10 per 1k tokens, at most 200 tokens)
    # and is charged 2 (100 tokens), and 20 credits: between 6 and 10 messages can be paid for, depending on
    # how many reservations overlap
    channel, key = race_channel_factory(credits=20)
    AIAgent.objects.filter(pk=channel.agent_id).update(
        credit_cost_per_1k_tokens=10, history_max_chars=400, max_output_tokens=100
    )
    count = 30
    scripted_agent.script(*[AgentReply(texts=["Paid."], input_tokens=60, output_tokens=40)] * count)
    scripted_agent.delay = 0.05

    # when: thirty messages of thirty contacts start together
    responses = run_together(
        count, lambda index, api: api.post(message(f"c{index}@example.com", "hi")), channel=channel, key=key
    )

    # then: each was answered (and charged 2) or refused with 402 before anything was stored
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 402}, sorted(set(statuses))
    answered = [r.json() for r in responses if r.status_code == 200]
    assert 6 <= len(answered) <= 10, statuses
    assert {body["usage"]["credits"] for body in answered} == {2}
    assert Message.objects.filter(direction="INBOUND").count() == len(answered)
    balance, reserved, ledger = books(channel.workspace)
    assert (balance, reserved, ledger) == (20 - 2 * len(answered), 0, 20 - 2 * len(answered))
    # and each charge's balance_after is the balance the one before it left, minus the charge (the settlement's
    # UPDATE ... RETURNING in the same statement), in the order the workspace row's lock gave them
    charges = list(
        UsageLedgerEntry.objects.filter(kind="CHARGE").order_by("-balance_after").values_list("delta", "balance_after")
    )
    assert [after for _, after in charges] == [20 - 2 * (i + 1) for i in range(len(answered))]
    assert {delta for delta, _ in charges} == {-2}
    assert sorted(body["usage"]["balance"] for body in answered) == sorted(after for _, after in charges)
