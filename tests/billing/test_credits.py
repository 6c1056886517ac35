"""The credit arithmetic (billing/credits.py), one service at a time: what a reply may cost and does
cost, and the reserve / settle / release / grant moves at their edges. The balance always equals the sum of
the ledger, and neither the balance nor the reservation goes below zero. (The API-level and concurrent
cases are in tests/api/test_messages_api.py, tests/api/test_idempotency_api.py and
tests/concurrency/test_credits_race.py.)"""

import json
from dataclasses import replace

import pytest
from django.utils import timezone

from api.flow import writes
from billing.credits import (
    InsufficientCredits,
    credits_charge,
    credits_cost,
    credits_estimate,
    credits_grant,
    credits_release,
    credits_reserve,
)
from billing.models import UsageLedgerEntry
from channels_app.models import Workspace
from contacts.models import Contact
from conversations.models import Conversation, Message
from tests.agents import agent_config
from tests.factories import ChannelFactory, WorkspaceFactory

FLAT = agent_config()


def books(workspace: Workspace) -> tuple[int, int, int]:
    """(balance, reserved, sum of the ledger)."""
    workspace.refresh_from_db()
    ledger = sum(UsageLedgerEntry.objects.filter(workspace=workspace).values_list("delta", flat=True))
    return workspace.credit_balance, workspace.credit_reserved, ledger


@pytest.fixture
def funded(db) -> Workspace:
    """A workspace with 10 credits, granted through the ledger, nothing reserved."""
    workspace = WorkspaceFactory.create()
    credits_grant(workspace=workspace, amount=10)
    return workspace


def message_of(workspace: Workspace) -> Message:
    channel = ChannelFactory.create(workspace=workspace)
    contact = Contact.objects.create(workspace=workspace, identifier="user@example.com")
    conversation = Conversation.objects.create(
        workspace=workspace, channel=channel, contact=contact, agent=channel.agent
    )
    return Message.objects.create(
        conversation=conversation, seq=1, direction="INBOUND", type="TEXT", content={"text": {"body": "hi"}}
    )


def settle(workspace: Workspace, *, reserved: int, cost: int) -> tuple[int, int]:
    """The record phase's settlement (api/flow/writes.py) of a message holding `reserved`: (charged, balance after)."""
    message = message_of(workspace)
    Message.objects.filter(pk=message.pk).update(credits_reserved=reserved)
    charge = credits_charge(cost=cost, reserved=reserved)
    body = writes.inbound_settle_answer(
        message_id=message.pk,
        workspace_id=workspace.pk,
        reserved=reserved,
        charge=charge,
        input_tokens=30,
        output_tokens=10,
        template=f'{{"balance":{writes.BALANCE_PLACEHOLDER}}}'.encode(),
        claim=None,
        commit=False,
        now=timezone.now(),
    )
    return charge, json.loads(body)["balance"]


# --- what a reply may cost, and costs ------------------------------------------------------------------


def test_a_flat_priced_agent_reserves_and_costs_its_price_per_reply():
    assert credits_estimate(agent=FLAT) == 1
    assert credits_cost(agent=FLAT, input_tokens=50_000, output_tokens=50_000) == 1


def test_a_free_agent_reserves_and_costs_nothing():
    free = replace(FLAT, credit_cost_per_reply=0)
    assert credits_estimate(agent=free) == 0
    assert credits_cost(agent=free, input_tokens=100, output_tokens=100) == 0


@pytest.mark.parametrize(
    ("history_max_chars", "max_output_tokens", "expected"),
    [
        # the prompt at a quarter token a character, plus the most the answer may take (1,024 when unset)
        (12_000, None, 1 + 5),  # 3,000 + 1,024 tokens = 4.024 credits, rounded up
        (12_000, 1_000, 1 + 4),  # 3,000 + 1,000 = exactly 4
        (4, 1, 1 + 1),  # 2 tokens still cost a whole credit
        (0, None, 1 + 2),  # no history budget: the answer's 1,024 tokens alone
    ],
)
def test_a_token_priced_agent_reserves_for_its_largest_prompt_and_answer(
    history_max_chars, max_output_tokens, expected
):
    agent = replace(
        FLAT, credit_cost_per_1k_tokens=1, history_max_chars=history_max_chars, max_output_tokens=max_output_tokens
    )
    assert credits_estimate(agent=agent) == expected


@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "expected"),
    [(0, 0, 1), (1, 0, 2), (600, 400, 2), (600, 401, 3), (2_000, 0, 3)],
)
def test_a_token_priced_reply_costs_its_price_plus_every_started_thousand_tokens(input_tokens, output_tokens, expected):
    agent = replace(FLAT, credit_cost_per_1k_tokens=1)
    assert credits_cost(agent=agent, input_tokens=input_tokens, output_tokens=output_tokens) == expected


def test_a_reply_never_costs_more_than_was_reserved_for_it():
    agent = replace(FLAT, credit_cost_per_1k_tokens=3, history_max_chars=2_000, max_output_tokens=200)
    largest = credits_cost(agent=agent, input_tokens=2_000 // 4, output_tokens=200)
    assert largest <= credits_estimate(agent=agent)


# --- reserve and release ------------------------------------------------------------------------------------


def test_the_exact_balance_can_be_reserved_and_then_nothing_more(funded):
    credits_reserve(workspace_id=funded.pk, amount=10)
    assert books(funded) == (10, 10, 10)

    with pytest.raises(InsufficientCredits) as refused:
        credits_reserve(workspace_id=funded.pk, amount=1)

    assert refused.value.details == {"available": 0, "required": 1}
    assert books(funded) == (10, 10, 10)


def test_a_reservation_counts_what_others_hold(funded):
    credits_reserve(workspace_id=funded.pk, amount=7)

    with pytest.raises(InsufficientCredits) as refused:
        credits_reserve(workspace_id=funded.pk, amount=4)

    assert refused.value.details == {"available": 3, "required": 4}
    assert "3 credits available" in str(refused.value) and "needs 4" in str(refused.value)


@pytest.mark.parametrize("amount", [0, -5])
def test_a_zero_reservation_needs_no_credits_and_moves_nothing(db, amount):
    empty = WorkspaceFactory.create()
    credits_reserve(workspace_id=empty.pk, amount=amount)
    assert books(empty) == (0, 0, 0)


def test_release_gives_the_reservation_back_and_zero_is_a_no_op(funded):
    credits_reserve(workspace_id=funded.pk, amount=4)

    credits_release(workspace_id=funded.pk, amount=0)
    assert books(funded) == (10, 4, 10)
    credits_release(workspace_id=funded.pk, amount=4)
    assert books(funded) == (10, 0, 10)


# --- settle -------------------------------------------------------------------------------------------------


def test_settle_charges_the_cost_and_frees_the_whole_reservation(funded):
    credits_reserve(workspace_id=funded.pk, amount=5)

    charged, balance = settle(funded, reserved=5, cost=2)

    assert (charged, balance) == (2, 8)
    assert books(funded) == (8, 0, 8)
    entry = UsageLedgerEntry.objects.get(kind=UsageLedgerEntry.Kind.CHARGE)
    assert (entry.delta, entry.balance_after, entry.input_tokens, entry.output_tokens) == (-2, 8, 30, 10)


def test_settle_caps_a_cost_above_the_reservation_at_the_reservation(funded):
    credits_reserve(workspace_id=funded.pk, amount=3)

    charged, balance = settle(funded, reserved=3, cost=50)

    assert (charged, balance) == (3, 7)
    assert books(funded) == (7, 0, 7)


def test_settle_of_the_whole_balance_leaves_zero_never_less(funded):
    credits_reserve(workspace_id=funded.pk, amount=10)

    assert settle(funded, reserved=10, cost=10) == (10, 0)
    assert books(funded) == (0, 0, 0)


def test_settle_of_a_zero_cost_writes_no_ledger_entry_and_frees_the_reservation(funded):
    credits_reserve(workspace_id=funded.pk, amount=2)

    assert settle(funded, reserved=2, cost=0) == (0, 10)
    assert books(funded) == (10, 0, 10)
    assert not UsageLedgerEntry.objects.filter(kind=UsageLedgerEntry.Kind.CHARGE).exists()


# --- grant ----------------------------------------------------------------------------------------------


def test_a_grant_is_a_ledger_entry_with_the_balance_after_it(funded):
    entry = credits_grant(workspace=funded, amount=5, note="top-up " + "x" * 300)

    assert (entry.kind, entry.delta, entry.balance_after) == ("GRANT", 5, 15)
    assert len(entry.note) == 200
    assert books(funded) == (15, 0, 15)


def test_a_negative_grant_may_take_the_balance_down_to_what_is_reserved(funded):
    credits_reserve(workspace_id=funded.pk, amount=4)

    entry = credits_grant(workspace=funded, amount=-6, kind=UsageLedgerEntry.Kind.ADJUSTMENT)

    assert (entry.kind, entry.delta, entry.balance_after) == ("ADJUSTMENT", -6, 4)
    assert books(funded) == (4, 4, 4)


def test_a_negative_grant_below_what_is_reserved_is_refused_and_moves_nothing(funded):
    credits_reserve(workspace_id=funded.pk, amount=4)

    with pytest.raises(InsufficientCredits) as refused:
        credits_grant(workspace=funded, amount=-7)

    assert refused.value.details == {"balance": 10, "reserved": 4}
    assert books(funded) == (10, 4, 10)
    assert UsageLedgerEntry.objects.filter(workspace=funded).count() == 1


def test_a_grant_uses_the_stored_balance_not_the_callers_stale_copy(funded):
    stale = Workspace.objects.get(pk=funded.pk)
    credits_grant(workspace=funded, amount=5)

    entry = credits_grant(workspace=stale, amount=1)

    assert entry.balance_after == 16
    assert books(funded) == (16, 0, 16)
