"""The messages endpoint's writes: a few statements per phase (api/flow/messaging.py), the only place they are made.

The accept and record phases write to several tables in one short transaction each. Through the ORM that
would be one round trip per row and per table: 13 statements of work per message, each built by the ORM's
compiler and planned by PostgreSQL anew. Here the same rows are written by data-modifying CTEs
(`WITH ... INSERT/UPDATE ... RETURNING`): the accept phase's writes in one statement (`inbound_accept`), the
record phase's in two (`replies_store`, then `inbound_settle_answer`), and the statement that locks the
workspace row (every message of a workspace locks it twice) is its transaction's last and commits it in the
same round trip (`_commits`; docs/architecture.md, "Statements per message").

What the ORM would do stays:
- the rows: each is built as a model instance (its defaults, `auto_now_add`, ids) and adapted by its fields
  (config/statements.py), so a column added to a model is written here too, with its default;
- the order of row locks (docs/architecture.md, "Row locks"). PostgreSQL runs a step when the statement
  first reads its result, and a step nothing reads after the main query: so each step that must come after
  another reads it (`WHERE EXISTS (SELECT 1 FROM <previous step>)` or `FROM <previous step>`), which fixes
  the order and makes a step whose predecessor found nothing do nothing;
- the races: a unique constraint that fires (a concurrent first message of the same contact) fails the whole
  statement with IntegrityError, and the caller retries the transaction; a conversation closed or erased
  after the lookup stops the statement, and the caller opens a new conversation or gives up
  (`ContactErased`); too few credits stop it (InsufficientCredits).

Only the common path is here. The rare branches (a contact's first name, a conversation closed for inactivity
on arrival, a retry resuming a stored message, a webhook's event, the failure path) run ORM functions in the
same transaction, which then commits as Django commits it.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Model

from analytics.stats import message_stats_answered_statement
from api.flow.actions import TurnEffects
from api.flow.idempotency import Claim
from api.models import IdempotencyRecord
from billing.credits import (
    credits_reserve_statement,
    credits_settle_statement,
    credits_shortfall,
    ledger_charge_build,
)
from channels_app.models import Workspace
from config.statements import insert_select, table
from contacts.models import Contact
from contacts.services import contact_attributes_merge_statement
from conversations.labels import LABELS_MAX
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

COMMIT_SQL = "COMMIT"
ABORT_FUNCTION = "channels_hot_path_abort"  # created by api/migrations/0002_hot_path_abort.py
_CONVERSATION_GONE, _NO_CREDITS, _RESERVATION_GONE = "conversation_gone", "insufficient_credits", "reservation_gone"


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
        into, values, params = insert_select(instance, expressions=expressions)
        tail = f" FROM {source}" if source else self.after()
        self.step(name, f"INSERT INTO {into} {values}{tail} RETURNING {returning}", params)

    def run(
        self,
        select: str,
        params: list[Any] | None = None,
        *,
        commit: bool = False,
        aborts: dict[str, Callable[[], Exception | None]] | None = None,
    ) -> tuple[Any, ...] | None:
        """Run the statement: its steps, then `select` (which may stop the transaction with `_abort(reason)`,
        raising Aborted with `aborts[reason]`); with `commit`, the transaction's COMMIT in the same round trip."""
        if commit:
            # The COMMIT ends the transaction of the outermost atomic block, which must not issue anything after
            # it (tests/conftest.py fails a test that does); a nested block's savepoint would be lost with it.
            assert len(connection.atomic_blocks) == 1 and not connection.get_autocommit(), "COMMIT outside its block"
        sql = f"WITH {', '.join(self.steps)} {select}" + (f"; {COMMIT_SQL}" if commit else "")
        with connection.cursor() as cursor:
            try:
                cursor.execute(sql, [*self.params, *(params or [])])
            except DatabaseError as error:
                reason = getattr(getattr(error.__cause__, "diag", None), "message_primary", None)
                if aborts and reason in aborts:
                    raise Aborted(reason, aborts[reason]) from error
                raise
            return cursor.fetchone()


def _abort(reason: str) -> str:
    """SQL that stops the statement and its transaction (the function api/migrations/0002_hot_path_abort.py
    makes): for an outcome that must write nothing, in a statement that commits (`_commits`)."""
    return f"{ABORT_FUNCTION}('{reason}')"


class Aborted(Exception):
    """A statement of this module stopped its transaction. The caller lets it leave the atomic block (which
    rolls back), then calls `error()`: the exception to raise, or None to run the transaction again."""

    def __init__(self, reason: str, error: Callable[[], Exception | None]) -> None:
        super().__init__(reason)
        self.reason, self.error = reason, error


def _commits() -> bool:
    """Whether the statement that ends a phase's transaction may commit it in its own round trip.

    A transaction that holds the workspace row (the credit reservation and the settlement lock it until
    commit) keeps every other message of the workspace waiting for as long as its COMMIT takes to be sent:
    under a burst, a gevent worker runs many requests, and a request whose statement returned waits its turn
    for the CPU before it can send the COMMIT. Sent with the statement, the lock is held only while
    PostgreSQL runs it and syncs the commit. Only the outermost transaction (a test's wrapping transaction
    must not be committed); Django's own COMMIT at the end of the atomic block then finds the transaction
    already committed (psycopg sends nothing) and runs the on-commit hooks as usual. A statement that commits
    is the transaction's last, and an outcome that must write nothing stops it (`_abort`), never returns.

    Off with the setting WRITES_COMMIT_IN_STATEMENT (the atomic block commits then), and refused with
    server-side binding (config/checks.py): a prepared statement holds one command, not two."""
    return settings.WRITES_COMMIT_IN_STATEMENT and len(connection.atomic_blocks) == 1


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
    """The accept phase's writes: the contact lookup (conversations.services.inbound_target), then one
    statement that stores the contact, the conversation and the message, attaches the message to the claim
    and reserves the credits (billing.credits_reserve_statement). Raises InsufficientCredits (the caller's
    transaction rolls back what the statement wrote), ContactErased, or IntegrityError for a concurrent first
    message of the same contact (the caller retries)."""
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
    write: dict[str, Any] = dict(
        message=message,
        claim=claim,
        workspace_id=workspace_id,
        reserve=credits_reserved,
        # the idle close's event is written after this statement, in the same transaction, and so is the
        # reservation for the agent a transfer gave the conversation (api.flow.messaging)
        commit=_commits() and target.closed_idle_id is None and not target.conversation_agent_transferred,
    )
    if target.append_to is not None:

        def gone() -> Exception | None:
            # After the rollback: erased after the lookup (the erasure's UPDATE held the row until it committed),
            # or closed (then None: the transaction runs again, and the message opens a new conversation).
            erased = Conversation.objects.filter(pk=target.append_to, erased_at__isnull=False).exists()
            return ContactErased() if erased else None

        message.seq = _accept_run(_appended(target.append_to, agent_id=agent_id, now=now), gone=gone, **write)
        assert target.conversation_created_at is not None
        return StoredInbound(
            contact_id=target.contact_id,
            conversation_id=target.append_to,
            conversation_created_at=target.conversation_created_at,
            message=message,
            closed_idle_id=target.closed_idle_id,
            **target.agent_context(),
        )
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
        # transaction, so that it sees the conversation and marks it erased (api/maintenance/erasure.py).
        statement.step(
            "e",
            f"SELECT 1 FROM {table(Contact)} WHERE id = %s AND erased_at IS NULL FOR KEY SHARE",
            [target.contact_id],
        )
    statement.insert("v", conversation)
    message.conversation_id = conversation.pk
    _accept_run(statement, gone=ContactErased, **write)  # the contact's step found nothing: erased after the lookup
    return StoredInbound(
        contact_id=target.contact_id,
        conversation_id=conversation.pk,
        conversation_created_at=conversation.created_at,
        message=message,
        closed_idle_id=target.closed_idle_id,
        contact_name=target.contact_name,
        contact_attributes=target.contact_attributes,
    )


def _appended(conversation_id: str, *, agent_id: str, now: datetime) -> _Statement:
    """The active conversation's next position: the UPDATE holds the conversation row until commit, so a second
    message of the same conversation gets the next position only after this one is visible, and a close waits
    for it too; it finds nothing once the conversation is closed or erased. Its agent follows the channel's
    unless the conversation was transferred to another (README "Actions")."""
    statement = _Statement()
    statement.step(
        "s",
        f"UPDATE {table(Conversation)} SET last_seq = last_seq + 1, last_message_at = %s, "
        "agent_id = CASE WHEN agent_transferred THEN agent_id ELSE %s END "
        "WHERE id = %s AND status = %s AND erased_at IS NULL RETURNING last_seq",
        [now, agent_id, conversation_id, Conversation.Status.ACTIVE],
    )
    return statement


def _accept_run(
    statement: _Statement,
    *,
    message: Message,
    claim: Claim | None,
    workspace_id: str,
    reserve: int,
    commit: bool,
    gone: Callable[[], Exception | None] | None = None,
) -> int:
    """Add the message, the claim's attachment and the reservation (last) to `statement` and run it; returns
    the message's position. Stops the transaction (Aborted) when the workspace cannot cover `reserve`
    (InsufficientCredits) or the conversation's position step found nothing (`gone` says what then)."""
    if statement.last == "s":
        statement.insert("m", message, source="s", returning="seq", seq="s.last_seq")
    else:
        statement.insert("m", message, returning="seq")
    if claim is not None:
        statement.step(
            "k",
            f"UPDATE {table(IdempotencyRecord)} SET message_id = %s, locked_until = %s WHERE id = %s"
            + statement.after("AND")
            + " RETURNING 1",
            [message.pk, message.lease_until, claim.record_id],
        )
    checks = f"WHEN NOT EXISTS (SELECT 1 FROM m) THEN {_abort(_CONVERSATION_GONE)} "
    if reserve > 0:
        sql, params = credits_reserve_statement(workspace_id=workspace_id, amount=reserve)
        statement.step("w", sql + statement.after("AND") + " RETURNING 1", params)
        checks += f"WHEN NOT EXISTS (SELECT 1 FROM w) THEN {_abort(_NO_CREDITS)} "
    aborts: dict[str, Callable[[], Exception | None]] = {
        _NO_CREDITS: lambda: credits_shortfall(workspace_id=workspace_id, amount=reserve)
    }
    if gone is not None:
        aborts[_CONVERSATION_GONE] = gone
    row = statement.run(f"SELECT (SELECT seq FROM m), CASE {checks}END", commit=commit, aborts=aborts)
    assert row is not None and row[0] is not None
    return row[0]


# --- record ----------------------------------------------------------------------------------------------


def replies_store(
    *,
    message: Message,
    workspace_id: str,
    channel_id: str,
    texts: list[str],
    charge: int,
    input_tokens: int,
    output_tokens: int,
    agent_seconds: float | None,
    now: datetime,
    contact_id: str = "",
    effects: TurnEffects | None = None,
) -> tuple[StoredReplies, bool]:
    """The record phase's first statement: the conversation's stamp (its UPDATE is the check: it finds
    nothing once the conversation was erased, then ContactErased; under READ COMMITTED an erasure in progress
    holds the row and the UPDATE then sees it erased), the replies, in the conversation even when it was closed
    while the agent was thinking (the close stands, and the result says so), the daily rollup
    (analytics.stats.message_stats_answered_statement), and whether the channel has a webhook
    (webhooks.services.event_emit).
    Returns the replies as stored and that flag. Locks the message row, then the contact's when the turn sets
    its attributes (`effects`), then the conversation row; the workspace row comes last, in
    `inbound_settle_answer`."""
    replies = replies_build(
        message=message, texts=texts, credits=charge, input_tokens=input_tokens, output_tokens=output_tokens
    )
    statement = _Statement()
    # The message's row first, as every transaction that changes a message and a workspace locks them
    # (docs/architecture.md, "Row locks"): the clean-up of abandoned messages locks it before the workspace's.
    statement.step("p", f"SELECT 1 FROM {table(Message)} WHERE id = %s FOR NO KEY UPDATE", [message.pk])
    if effects is not None and effects.attributes:
        # The contact's attributes, merged as PATCH /api/v1/contacts/{id} merges them, its row locked after the
        # message's and before the conversation's (the row-lock order); skipped (not failed) when a concurrent
        # change left no room for the new keys: the next step counts its rows, so the stamp runs after it either way.
        sql, params = contact_attributes_merge_statement(contact_id=contact_id, changes=effects.attributes)
        statement.step("ca", sql + statement.after("AND") + " RETURNING 1", params)
        statement.step("cn", "SELECT count(*) FROM ca", [])
    changes, changed = _effects_on_conversation(effects)
    statement.step(
        "v",
        f"UPDATE {table(Conversation)} SET last_message_at = %s{changes} WHERE id = %s AND erased_at IS NULL"
        + statement.after("AND")
        + " RETURNING status, closed_at, close_reason, labels",
        [now, *changed, message.conversation_id],
    )
    for index, reply in enumerate(replies):
        statement.insert(f"r{index}", reply, source="v")
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
        "SELECT v.status, v.closed_at, v.close_reason, v.labels, "
        f"EXISTS (SELECT 1 FROM {table(WebhookEndpoint)} WHERE channel_id = %s) FROM v",
        [channel_id],
    )
    if row is None:
        raise ContactErased()
    status, closed_at, close_reason, labels, has_webhook = row
    if status == Conversation.Status.ACTIVE:
        closed_at, close_reason = None, None
    stored = StoredReplies(
        messages=replies,
        status=status,
        closed_at=closed_at,
        close_reason=close_reason or None,
        labels=tuple(json.loads(labels) if isinstance(labels, str) else labels),
    )
    return stored, has_webhook


# The labels after adding new ones: the old first, then the new in the order given, each once; unchanged when
# that would be more than LABELS_MAX.
_LABELS_MERGED = (
    "(SELECT coalesce(jsonb_agg(x ORDER BY o), '[]'::jsonb) FROM (SELECT x, min(o) AS o FROM ("
    "SELECT x, o FROM jsonb_array_elements_text(labels) WITH ORDINALITY AS e(x, o) UNION ALL "
    "SELECT x, 1000 + o FROM jsonb_array_elements_text(%s::jsonb) WITH ORDINALITY AS n(x, o)) AS u GROUP BY x) AS d)"
)


def _effects_on_conversation(effects: TurnEffects | None) -> tuple[str, list[Any]]:
    """The SET clauses (and their parameters) of the turn's labels and transfer (api/flow/actions.py), written by
    the record phase's conversation UPDATE: no statement of their own. A close is written after it
    (api.flow.messaging), with its `conversation.closed` event."""
    if not effects:
        return "", []
    sql, params = "", []
    if effects.labels:
        new = json.dumps(effects.labels, ensure_ascii=False)
        sql += f", labels = CASE WHEN jsonb_array_length({_LABELS_MERGED}) <= %s THEN {_LABELS_MERGED} ELSE labels END"
        params += [new, LABELS_MAX, new]
    if effects.transfer_to is not None:
        sql += ", agent_id = %s, agent_transferred = TRUE"
        params.append(effects.transfer_to[0])
    return sql, params


# The 200 body shows the balance after the settlement, which only the settlement's statement knows: the body is
# rendered with this number as the balance, and that statement writes the real one in its place, in the bytes
# it stores (and `inbound_settle_answer` in the bytes it returns). `"balance":-7364982015593814271` cannot occur
# anywhere else in a JSON body: inside a string a quote is escaped.
BALANCE_PLACEHOLDER = -7364982015593814271
_BALANCE_FIELD = '"balance":'
_BALANCE_MARK = f"{_BALANCE_FIELD}{BALANCE_PLACEHOLDER}"


def inbound_settle_answer(
    *,
    message_id: str,
    workspace_id: str,
    reserved: int,
    charge: int,
    input_tokens: int,
    output_tokens: int,
    template: bytes,
    claim: Claim | None,
    commit: bool,
    now: datetime,
    actions: list[dict[str, Any]] | None = None,
) -> bytes:
    """The record phase's last statement: the settlement (billing.credits_settle_statement: the reservation
    off, the charge from the balance, its ledger entry), the message answered with its 200 body (only while it
    still holds `reserved`: the reservation moves with the message row, so whoever clears it, this, the
    failure path or the clean-up of an abandoned message, is the only one to settle or release it) and the
    key's response stored for replay (only by the key's owner), with the COMMIT when `commit` (`_commits`).
    `template` is the body with BALANCE_PLACEHOLDER as the balance; returns the body as stored. Stops the
    transaction (Aborted, `error()` None) when the message no longer holds `reserved`: the clean-up released
    it meanwhile."""
    assert template.count(_BALANCE_MARK.encode()) == 1, "the body shows the balance once"
    statement = _Statement()
    sql, params = credits_settle_statement(workspace_id=workspace_id, reserved=reserved, charge=charge, now=now)
    statement.step("w", sql, params)
    if charge > 0:
        entry = ledger_charge_build(
            workspace_id=workspace_id,
            charge=charge,
            balance=0,
            message_id=message_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        statement.insert("l", entry, source="w", balance_after="w.credit_balance")
    condition = " AND m.credits_reserved = %s" if reserved > 0 else ""
    statement.step(
        "a",
        f"UPDATE {table(Message)} m SET status = %s, lease_until = NULL, credits_reserved = 0, error_code = '', "
        "result = convert_to(replace(%s, %s, %s || w.credit_balance::text), 'UTF8')"
        + (", actions = %s::jsonb" if actions else "")
        + f" FROM w WHERE m.id = %s{condition} RETURNING m.result",
        [
            Message.Status.ANSWERED,
            template.decode(),
            _BALANCE_MARK,
            _BALANCE_FIELD,
            *([json.dumps(actions, ensure_ascii=False)] if actions else []),
            message_id,
            *([reserved] if reserved > 0 else []),
        ],
    )
    if claim is not None:
        records = table(IdempotencyRecord)
        statement.step(
            "k",
            f"UPDATE {records} SET state = %s, response_status = 200, response_body = a.result, locked_until = NULL "
            f"FROM a WHERE {records}.id = %s AND {records}.owner = %s RETURNING 1",
            [IdempotencyRecord.State.COMPLETED, claim.record_id, claim.owner],
        )
    row = statement.run(
        f"SELECT (SELECT credit_balance FROM w), CASE WHEN NOT EXISTS (SELECT 1 FROM a) THEN "
        f"{_abort(_RESERVATION_GONE)} END",
        commit=commit,
        aborts={_RESERVATION_GONE: lambda: None},
    )
    assert row is not None
    return template.replace(_BALANCE_MARK.encode(), f"{_BALANCE_FIELD}{row[0]}".encode(), 1)


def record_commits(*, has_webhook: bool) -> bool:
    """Whether the record phase's last statement commits (`_commits`): not when a webhook's event follows it."""
    return _commits() and not has_webhook


# --- bursts (docs/architecture.md, "Bursts") -------------------------------------------------------------------


@dataclass(frozen=True)
class BurstPosition:
    """A conversation in the latest burst mode as `burst_lock` locked it."""

    last_seq: int
    status: str
    closed_at: datetime | None
    close_reason: str | None
    last_message_at: datetime
    labels: tuple[str, ...]


def burst_lock(*, message_id: str, conversation_id: str, contact_id: str | None = None) -> BurstPosition:
    """Lock the message's row, then the contact's when `contact_id` (a record phase that will set its
    attributes, `replies_store`), then its conversation's (the order of docs/architecture.md, "Row locks"), and
    return the conversation as locked. The position step of a newer message's accept phase updates that row:
    it waits for this transaction, or this one reads its `last_seq` after it committed. So a message that
    finds itself the newest here stays the newest until this transaction ends."""
    statement = _Statement()
    statement.step("p", f"SELECT 1 FROM {table(Message)} WHERE id = %s FOR NO KEY UPDATE", [message_id])
    if contact_id is not None:
        statement.step(
            "c", f"SELECT 1 FROM {table(Contact)} WHERE id = %s{statement.after('AND')} FOR NO KEY UPDATE", [contact_id]
        )
    row = statement.run(
        f"SELECT last_seq, status, closed_at, close_reason, last_message_at, labels FROM {table(Conversation)} "
        "WHERE id = %s" + statement.after("AND") + " FOR NO KEY UPDATE",
        [conversation_id],
    )
    assert row is not None, "a message's conversation is never deleted while it is answered"
    last_seq, status, closed_at, close_reason, last_message_at, labels = row
    if status == Conversation.Status.ACTIVE:
        closed_at, close_reason = None, None
    labels = tuple(json.loads(labels) if isinstance(labels, str) else labels)
    return BurstPosition(last_seq, status, closed_at, close_reason or None, last_message_at, labels)


def burst_pin(*, message_id: str) -> None:
    """Mark the pending message as the one that answers its burst whatever arrives after it (its caller holds
    the rows, `burst_lock`, and found it the newest)."""
    Message.objects.filter(pk=message_id, status=Message.Status.PENDING).update(burst_final=True)


def inbound_supersede(*, message_id: str, workspace_id: str, template: bytes, claim: Claim | None) -> bytes | None:
    """Mark the pending message SUPERSEDED with its body (`template`, BALANCE_PLACEHOLDER as the balance),
    release its whole reservation (whatever is still on the row: the clean-up may have taken it already) and
    complete its idempotency key with the body (only by the key's owner). One statement, locking the message,
    then the workspace. Returns the body as stored, or None when the message no longer waits for its answer."""
    assert template.count(_BALANCE_MARK.encode()) == 1, "the body shows the balance once"
    messages, workspaces = table(Message), table(Workspace)
    statement = _Statement()
    statement.step(
        "o",
        f"SELECT id, credits_reserved FROM {messages} WHERE id = %s AND status = %s FOR NO KEY UPDATE",
        [message_id, Message.Status.PENDING],
    )
    statement.step(
        "w",
        f"UPDATE {workspaces} SET credit_reserved = credit_reserved - o.credits_reserved FROM o "
        f"WHERE {workspaces}.id = %s RETURNING credit_balance",
        [workspace_id],
    )
    statement.step(
        "a",
        f"UPDATE {messages} m SET status = %s, lease_until = NULL, credits_reserved = 0, error_code = '', "
        "result = convert_to(replace(%s, %s, %s || w.credit_balance::text), 'UTF8') FROM w, o "
        "WHERE m.id = o.id RETURNING m.result",
        [Message.Status.SUPERSEDED, template.decode(), _BALANCE_MARK, _BALANCE_FIELD],
    )
    if claim is not None:
        records = table(IdempotencyRecord)
        statement.step(
            "k",
            f"UPDATE {records} SET state = %s, response_status = 200, response_body = a.result, locked_until = NULL "
            f"FROM a WHERE {records}.id = %s AND {records}.owner = %s RETURNING 1",
            [IdempotencyRecord.State.COMPLETED, claim.record_id, claim.owner],
        )
    row = statement.run("SELECT (SELECT result FROM a)")
    return bytes(row[0]) if row is not None and row[0] is not None else None
