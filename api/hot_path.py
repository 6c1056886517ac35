"""The messages endpoint's writes on PostgreSQL: each phase's writes as one statement (api/messaging.py).

The accept and record phases write to several tables in one short transaction each. Through the ORM that is
one round trip per row and per table (contact, conversation, message, idempotency record, workspace; replies,
conversation, workspace, ledger, daily rollup, message, idempotency record): 13 statements of work per message,
each built by the ORM's compiler and planned by PostgreSQL anew. Here the same rows are written by
data-modifying CTEs (`WITH ... INSERT/UPDATE ... RETURNING`): the accept phase's writes in one statement, the
record phase's in two (the 200 body, stored with the message, shows the balance the settlement returns, so it
can only be rendered between the two).

What stays exactly as the ORM path does it (the SQLite path, which has no data-modifying CTEs, runs the ORM
functions these statements stand for, in the same order):
- the rows: each is built as a model instance (its defaults, `auto_now_add`, ids) and adapted by its fields
  (config/statements.py), so a column added to a model is written here too, with its default;
- the order of row locks: in the accept phase the workspace row (credit reservation) last, after the inserts;
  in the record phase the conversation row, then the workspace row, as the ORM path takes them. PostgreSQL
  runs a step when the statement first reads its result, and a step nothing reads after the main query: so
  each step that must come after another reads it (`WHERE EXISTS (SELECT 1 FROM <previous step>)`), which
  fixes the order and makes a step whose predecessor found nothing do nothing;
- the races: a unique constraint that fires (a concurrent first message of the same contact) fails the whole
  statement with IntegrityError, and the caller retries the transaction, as before; a conversation closed or
  erased after the lookup makes the sequence step find nothing, and the caller opens a new conversation or
  gives up (`ContactErased`), as before.

Only the common path is here. The rare branches (a contact's first name, a conversation closed for inactivity
on arrival, a retry resuming a stored message, a webhook's event, the failure path) run the ORM functions on
both databases.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Model

from api.idempotency import Claim
from api.models import IdempotencyRecord
from backoffice.stats import message_stats_answered_statement
from billing.credits import (
    credits_reserve_statement,
    credits_settle_statement,
    credits_shortfall,
    ledger_charge_build,
)
from config.statements import insert_select, table_columns
from contacts.models import Contact
from conversations.models import Conversation, Message
from conversations.services import (
    ContactErased,
    StoredInbound,
    StoredReplies,
    conversation_build,
    inbound_message_build,
    inbound_target,
    replies_build,
)
from webhooks.models import WebhookEndpoint


def enabled() -> bool:
    """Whether the phases write through these statements (PostgreSQL) or through the ORM (SQLite)."""
    return connection.vendor == "postgresql"


def _table(model: type[Model]) -> str:
    return table_columns(model)[0]


class _Statement:
    """One statement of steps, `WITH a AS (...), b AS (...) SELECT ...`, each step run after the one before
    it (module docstring): `after()` is the condition that orders a step after the previous one."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.params: list[Any] = []
        self.last: str | None = None

    def after(self, keyword: str = "WHERE") -> str:
        return f" {keyword} EXISTS (SELECT 1 FROM {self.last})" if self.last else ""

    def step(self, name: str, sql: str, params: list[Any]) -> None:
        self.steps.append(f"{name} AS ({sql})")
        self.params.extend(params)
        self.last = name

    def insert(
        self, name: str, instance: Model, *, source: str | None = None, returning: str = "1", **expressions: str
    ) -> None:
        """Insert `instance` after the previous step, or once per row of the step `source`."""
        table, values, params = insert_select(instance, expressions=expressions)
        tail = f" FROM {source}" if source else self.after()
        self.step(name, f"INSERT INTO {table} {values}{tail} RETURNING {returning}", params)

    def run(self, select: str, params: list[Any] | None = None) -> tuple[Any, ...] | None:
        with connection.cursor() as cursor:
            cursor.execute(f"WITH {', '.join(self.steps)} {select}", [*self.params, *(params or [])])
            return cursor.fetchone()


# --- accept ----------------------------------------------------------------------------------------------


def inbound_accept(
    *,
    workspace_id: str,
    channel_id: str,
    agent_id: str,
    inactivity_timeout_seconds: int,
    contact_identifier: str,
    contact_name: str,
    type: str,
    content: dict[str, Any],
    metadata: dict[str, str],
    now: datetime,
    lease_until: datetime,
    credits_reserved: int,
    claim: Claim | None,
) -> StoredInbound:
    """The accept phase's writes (conversations.services.inbound_message_store, then the claim's
    `idempotency_attach_message` and `credits_reserve`, as the SQLite path runs them): the contact lookup, then
    one statement. Raises InsufficientCredits (the caller's transaction rolls back what the statement wrote),
    ContactErased, or IntegrityError for a concurrent first message of the same contact (the caller retries)."""
    target = inbound_target(
        workspace_id=workspace_id,
        channel_id=channel_id,
        inactivity_timeout_seconds=inactivity_timeout_seconds,
        contact_identifier=contact_identifier,
        contact_name=contact_name,
        now=now,
    )
    message = inbound_message_build(
        conversation_id=target.append_to or "",
        seq=1,
        type=type,
        content=content,
        metadata=metadata,
        lease_until=lease_until,
        credits_reserved=credits_reserved,
    )
    write: dict[str, Any] = dict(message=message, claim=claim, workspace_id=workspace_id, reserve=credits_reserved)
    if target.append_to is not None:
        seq = _accept_run(_appended(target.append_to, agent_id=agent_id, now=now), **write)
        if seq is not None:
            assert target.conversation_created_at is not None
            message.seq = seq
            return StoredInbound(
                contact_id=target.contact_id,
                conversation_id=target.append_to,
                conversation_created_at=target.conversation_created_at,
                message=message,
                closed_idle_id=target.closed_idle_id,
            )
        if Conversation.objects.filter(pk=target.append_to, erased_at__isnull=False).exists():
            raise ContactErased()  # erased after the lookup (the erasure's UPDATE held the row until it committed)
        # closed after the lookup: the message opens a new conversation
    conversation = conversation_build(
        workspace_id=workspace_id, channel_id=channel_id, contact_id=target.contact_id, agent_id=agent_id, now=now
    )
    statement = _Statement()
    if target.contact is not None:
        statement.insert("c", target.contact)
    else:
        # A known contact's new conversation, only while the contact is not erased. The lookup may predate an
        # erasure that commits before this statement (or holds the contact row until it commits: the lock
        # waits for it, then reads the row as it committed); the conversation's foreign key is checked only
        # at commit and an erased contact's row still exists, so without this the message and its replies
        # would be kept in a conversation the erasure never saw. The lock makes a later erasure wait for this
        # transaction, so that it sees the conversation and marks it erased (api/erasure.py).
        statement.step(
            "e",
            f"SELECT 1 FROM {_table(Contact)} WHERE id = %s AND erased_at IS NULL FOR KEY SHARE",
            [target.contact_id],
        )
    statement.insert("v", conversation)
    message.conversation_id = conversation.pk
    if _accept_run(statement, **write) is None:
        raise ContactErased()  # erased after the lookup: nothing was written
    return StoredInbound(
        contact_id=target.contact_id,
        conversation_id=conversation.pk,
        conversation_created_at=conversation.created_at,
        message=message,
        closed_idle_id=target.closed_idle_id,
    )


def _appended(conversation_id: str, *, agent_id: str, now: datetime) -> _Statement:
    """The active conversation's next position (conversations.services._seq_take: the UPDATE holds the row
    until commit and finds nothing once the conversation is closed or erased); its agent follows the channel's."""
    statement = _Statement()
    statement.step(
        "s",
        f"UPDATE {_table(Conversation)} SET last_seq = last_seq + 1, last_message_at = %s, agent_id = %s "
        "WHERE id = %s AND status = %s AND erased_at IS NULL RETURNING last_seq",
        [now, agent_id, conversation_id, Conversation.Status.ACTIVE],
    )
    return statement


def _accept_run(
    statement: _Statement, *, message: Message, claim: Claim | None, workspace_id: str, reserve: int
) -> int | None:
    """Add the message, the claim's attachment and the reservation (last) to `statement` and run it: the
    message's position, or None when the conversation's position step found nothing (then nothing was written)."""
    if statement.last == "s":
        statement.insert("m", message, source="s", returning="seq", seq="s.last_seq")
    else:
        statement.insert("m", message, returning="seq")
    if claim is not None:
        statement.step(
            "k",
            f"UPDATE {_table(IdempotencyRecord)} SET message_id = %s, locked_until = %s WHERE id = %s"
            + statement.after("AND")
            + " RETURNING 1",
            [message.pk, message.lease_until, claim.record_id],
        )
    if reserve > 0:
        sql, params = credits_reserve_statement(workspace_id=workspace_id, amount=reserve)
        statement.step("w", sql + statement.after("AND") + " RETURNING 1", params)
    row = statement.run(f"SELECT (SELECT seq FROM m), EXISTS (SELECT 1 FROM {statement.last})")
    assert row is not None
    seq, reserved = row
    if seq is not None and not reserved:
        raise credits_shortfall(workspace_id=workspace_id, amount=reserve)
    return seq


# --- record ----------------------------------------------------------------------------------------------


@dataclass
class Settled:
    replies: StoredReplies
    charged: int
    balance: int
    has_webhook: bool  # whether the channel has a webhook, read in the same statement


def replies_settle(
    *,
    message: Message,
    workspace_id: str,
    channel_id: str,
    texts: list[str],
    charge: int,
    reserved: int,
    input_tokens: int,
    output_tokens: int,
    agent_seconds: float | None,
    now: datetime,
) -> Settled:
    """The record phase's first statement: the conversation's stamp (conversations.services.replies_store: it
    finds nothing once the conversation was erased, then ContactErased), the settlement (billing.credits_settle),
    the replies, the ledger entry and the daily rollup (backoffice.stats.message_stats_answered), and whether
    the channel has a webhook (webhooks.services.event_emit). Locks the conversation row, then the workspace row."""
    replies = replies_build(
        message=message, texts=texts, credits=charge, input_tokens=input_tokens, output_tokens=output_tokens
    )
    statement = _Statement()
    statement.step(
        "v",
        f"UPDATE {_table(Conversation)} SET last_message_at = %s WHERE id = %s AND erased_at IS NULL "
        "RETURNING status, closed_at, close_reason",
        [now, message.conversation_id],
    )
    sql, params = credits_settle_statement(
        workspace_id=workspace_id, reserved=reserved, charge=charge, now=now, condition=statement.after("AND")
    )
    statement.step("w", sql, params)
    for index, reply in enumerate(replies):
        statement.insert(f"r{index}", reply, source="w")
    if charge > 0:
        entry = ledger_charge_build(
            workspace_id=workspace_id,
            charge=charge,
            balance=0,
            message_id=message.pk,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        statement.insert("l", entry, source="w", balance_after="w.credit_balance")
    sql, params = message_stats_answered_statement(
        workspace_id=workspace_id,
        channel_id=channel_id,
        at=now,
        replies=len(replies),
        credits=charge,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        agent_seconds=agent_seconds,
    )
    statement.step("d", sql, params)
    row = statement.run(
        "SELECT v.status, v.closed_at, v.close_reason, (SELECT credit_balance FROM w), "
        f"EXISTS (SELECT 1 FROM {_table(WebhookEndpoint)} WHERE channel_id = %s) FROM v",
        [channel_id],
    )
    if row is None:
        raise ContactErased()
    status, closed_at, close_reason, balance, has_webhook = row
    if status == Conversation.Status.ACTIVE:
        closed_at, close_reason = None, None
    stored = StoredReplies(messages=replies, status=status, closed_at=closed_at, close_reason=close_reason or None)
    return Settled(replies=stored, charged=charge, balance=balance, has_webhook=has_webhook)


def inbound_answered(*, message_id: str, reserved: int, result: bytes, claim: Claim | None) -> bool:
    """The record phase's second statement: the message answered with its 200 body
    (conversations.services.inbound_message_answer: False when the clean-up took its reservation meanwhile)
    and the key's response stored for replay (api.idempotency.idempotency_complete)."""
    statement = _Statement()
    condition = " AND credits_reserved = %s" if reserved > 0 else ""
    statement.step(
        "a",
        f"UPDATE {_table(Message)} SET status = %s, lease_until = NULL, credits_reserved = 0, error_code = '', "
        f"result = %s WHERE id = %s{condition} RETURNING result",
        [Message.Status.ANSWERED, result, message_id, *([reserved] if reserved > 0 else [])],
    )
    if claim is not None:
        table = _table(IdempotencyRecord)
        statement.step(
            "k",
            f"UPDATE {table} SET state = %s, response_status = 200, response_body = a.result, locked_until = NULL "
            f"FROM a WHERE {table}.id = %s AND {table}.owner = %s RETURNING 1",
            [IdempotencyRecord.State.COMPLETED, claim.record_id, claim.owner],
        )
    row = statement.run("SELECT EXISTS (SELECT 1 FROM a)")
    return bool(row and row[0])
