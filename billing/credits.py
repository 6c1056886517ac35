"""Credits: reserve before the agent runs, settle after it answers, release when it fails.

The balance only moves through a ledger entry (so it always equals the sum of the ledger). A message in
flight holds a reservation in `credit_reserved`; a reservation succeeds only while
`credit_balance - credit_reserved` covers it, so concurrent messages can never spend more than there is.
"""

import math
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import F

from billing.models import UsageLedgerEntry
from channels_app.models import Workspace
from config.errors import ApplicationError
from conversations.agents.base import MAX_TOOL_ROUNDS, AgentConfig


class InsufficientCredits(ApplicationError):
    code = "insufficient_credits"
    status_code = 402
    default_message = "The workspace has not enough credits for this message. Add credits and retry."


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


# Tokens assumed for the prompt of a token-priced agent when reserving; the charge is the real count,
# capped at what was reserved.
_RESERVE_INPUT_TOKENS_PER_CHAR = 0.25
_DEFAULT_OUTPUT_TOKENS = 1024
# One grant's ceiling: far above any real purchase, far below BIGINT, so a typo cannot overflow the balance.
CREDITS_GRANT_MAX = 10**12


def credits_estimate(*, agent: AgentConfig) -> int:
    """The most one reply of this agent may cost: the flat price plus its token price at the largest
    prompt (the history budget) and answer (max output tokens) it allows, once per call of the model: an
    agent with actions may call it MAX_TOOL_ROUNDS + 1 times (README "Actions"). Its tool results make later
    prompts longer still: what a turn costs beyond its reservation is not charged (`credits_charge`)."""
    tokens = agent.history_max_chars * _RESERVE_INPUT_TOKENS_PER_CHAR + (
        agent.max_output_tokens or _DEFAULT_OUTPUT_TOKENS
    )
    if agent.acts:
        tokens *= MAX_TOOL_ROUNDS + 1
    return agent.credit_cost_per_reply + math.ceil(agent.credit_cost_per_1k_tokens * tokens / 1000)


def credits_cost(*, agent: AgentConfig, input_tokens: int, output_tokens: int) -> int:
    return agent.credit_cost_per_reply + math.ceil(
        agent.credit_cost_per_1k_tokens * (input_tokens + output_tokens) / 1000
    )


def credits_reserve_statement(*, workspace_id: str, amount: int) -> tuple[str, list[Any]]:
    """The reservation's conditional UPDATE (`credits_reserve`): the WHERE clause ends with its last condition,
    so api/flow/writes.py can add one. It matches no row when the workspace cannot cover `amount`."""
    return (
        f"UPDATE {_q(Workspace._meta.db_table)} SET credit_reserved = credit_reserved + %s "
        "WHERE id = %s AND credit_balance >= credit_reserved + %s",
        [amount, workspace_id, amount],
    )


def credits_reserve(*, workspace_id: str, amount: int) -> None:
    """Hold `amount` credits for a message in flight, or raise InsufficientCredits. One conditional UPDATE:
    the row lock it takes is held only to the end of the caller's short accept transaction."""
    if amount <= 0:
        return
    sql, params = credits_reserve_statement(workspace_id=workspace_id, amount=amount)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        reserved = cursor.rowcount
    if not reserved:
        raise credits_shortfall(workspace_id=workspace_id, amount=amount)


def credits_shortfall(*, workspace_id: str, amount: int) -> InsufficientCredits:
    """The error of a reservation that found too few credits, saying how many there are (one query)."""
    available = (
        Workspace.objects.filter(pk=workspace_id)
        .values_list(F("credit_balance") - F("credit_reserved"), flat=True)
        .first()
    )
    available = max(available or 0, 0)
    return InsufficientCredits(
        f"The workspace has {_credits(available)} available and this message needs {_credits(amount)}. "
        "Add credits to the workspace and send the message again.",
        details={"available": available, "required": amount},
    )


def _credits(count: int) -> str:
    return f"{count} credit" if count == 1 else f"{count} credits"


def credits_release(*, workspace_id: str, amount: int) -> None:
    if amount > 0:
        Workspace.objects.filter(pk=workspace_id).update(credit_reserved=F("credit_reserved") - amount)


def credits_charge(*, cost: int, reserved: int) -> int:
    """What a reply is charged: its cost, never more than was reserved for it (so a balance cannot go below
    zero). The one rule for both the replies' stored credits and the ledger's charge (api/flow/writes.py)."""
    return min(cost, reserved)


def credits_settle_statement(*, workspace_id: str, reserved: int, charge: int, now: datetime) -> tuple[str, list[Any]]:
    """The settlement's UPDATE (a step of api/flow/writes.py's last statement), returning the balance after it:
    the reservation comes off and the charge (`credits_charge`) is taken from the balance."""
    return (
        f"UPDATE {_q(Workspace._meta.db_table)} SET credit_balance = credit_balance - %s, "
        f"credit_reserved = credit_reserved - %s, updated_at = %s WHERE id = %s RETURNING credit_balance",
        [charge, reserved, now, workspace_id],
    )


def ledger_charge_build(
    *, workspace_id: str, charge: int, balance: int, message_id: str, input_tokens: int, output_tokens: int
) -> UsageLedgerEntry:
    """The ledger entry of a settled charge (`credits_settle_statement`), not saved yet."""
    return UsageLedgerEntry(
        workspace_id=workspace_id,
        kind=UsageLedgerEntry.Kind.CHARGE,
        delta=-charge,
        balance_after=balance,
        message_id=message_id,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


@transaction.atomic
def credits_grant(
    *, workspace: Workspace, amount: int, note: str = "", kind: str = UsageLedgerEntry.Kind.GRANT
) -> UsageLedgerEntry:
    """Add (or, with a negative amount, remove) credits through a ledger entry. Locks the workspace row so
    the entry's `balance_after` is exact; a removal may not take the balance below what is reserved."""
    workspace = Workspace.objects.select_for_update(no_key=True).get(pk=workspace.pk)
    if amount < 0 and workspace.credit_balance + amount < workspace.credit_reserved:
        raise InsufficientCredits(
            "The workspace does not have that many credits to remove.",
            details={"balance": workspace.credit_balance, "reserved": workspace.credit_reserved},
        )
    workspace.credit_balance += amount
    workspace.save(update_fields=["credit_balance", "updated_at"])
    return UsageLedgerEntry.objects.create(
        workspace=workspace, kind=kind, delta=amount, balance_after=workspace.credit_balance, note=note[:200]
    )
