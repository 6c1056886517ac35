"""Concurrent messages against a balance that pays for only some of them (PostgreSQL): never overspent,
and the balance is always the sum of the ledger."""

import pytest

from billing.models import UsageLedgerEntry
from contacts.models import Contact
from conversations.models import Message
from tests.concurrency.conftest import run_together
from tests.conftest import SEED_TEXT

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS = 100
CREDITS = 40


def test_hundred_messages_with_credits_for_forty_charge_exactly_forty(race_channel_factory, scripted_agent):
    # given: credits for 40 one-credit replies; 100 different contacts, so no message waits for another's
    # turn in a conversation and they all compete for the credits at once
    channel, key = race_channel_factory(credits=CREDITS)
    scripted_agent.delay = 0.05

    # when
    def post(index, api):
        return api.post({**SEED_TEXT, "contactIdentifier": f"contact-{index}@example.com"})

    responses = run_together(REQUESTS, post, channel=channel, key=key)

    # then: exactly 40 were answered and charged, 60 refused before anything was stored or asked
    statuses = [r.status_code for r in responses]
    assert (statuses.count(200), statuses.count(402)) == (CREDITS, REQUESTS - CREDITS), sorted(set(statuses))
    assert all(r.json()["error"]["code"] == "insufficient_credits" for r in responses if r.status_code == 402)
    answered = {r.json()["messageId"] for r in responses if r.status_code == 200}
    assert scripted_agent.count == CREDITS
    inbound = Message.objects.filter(direction="INBOUND")
    assert set(inbound.values_list("pk", flat=True)) == answered
    assert set(inbound.values_list("status", flat=True)) == {"ANSWERED"}
    assert Contact.objects.count() == CREDITS

    # and the books: balance 0, nothing held back, balance == sum of the ledger, one charge per answer
    workspace = channel.workspace
    workspace.refresh_from_db()
    entries = UsageLedgerEntry.objects.filter(workspace=workspace)
    charges = entries.filter(kind=UsageLedgerEntry.Kind.CHARGE)
    assert (workspace.credit_balance, workspace.credit_reserved) == (0, 0)
    assert sum(entries.values_list("delta", flat=True)) == 0
    assert charges.count() == CREDITS and set(charges.values_list("delta", flat=True)) == {-1}
    assert set(charges.values_list("message_id", flat=True)) == answered
    assert sorted(charges.values_list("balance_after", flat=True)) == list(range(CREDITS))
