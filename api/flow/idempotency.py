"""Idempotency keys, scoped per workspace (Stripe's model and the IETF Idempotency-Key draft).

A key is claimed inside the accept transaction. Its record says who holds it (`owner`, until
`locked_until`), keeps the inbound message once stored, and, when the request completes, the exact response
bytes to replay. After a 5xx the key is RELEASED: a retry runs the agent again on the stored message.
"""

import hashlib
import json
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q

from api.models import IdempotencyRecord
from config.errors import ApplicationError
from config.statements import insert_select, quote


class IdempotencyInProgress(ApplicationError):
    code = "idempotency_in_progress"
    status_code = 409
    default_message = (
        "A request with this idempotency key is still being processed. Retry after the time given in Retry-After."
    )


class InvalidIdempotencyKey(ApplicationError):
    code = "invalid_idempotency_key"
    status_code = 400
    default_message = "The idempotency key must be 1 to 255 printable ASCII characters."


class IdempotencyKeyReused(ApplicationError):
    code = "idempotency_key_reused"
    status_code = 422
    default_message = "This idempotency key was already used for a different request. Use a new key for a new request."


MAX_KEY_LENGTH = 255


def idempotency_key_validate(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(32 <= ord(char) < 127 for char in key):
        raise InvalidIdempotencyKey(
            "The idempotency key must be 1 to 255 printable ASCII characters; a UUID is a good choice.",
            details={"header": "X-Idempotency-Key", "length": len(key)},
        )
    return key


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def request_fingerprint(*, method: str, path: str, channel_id: str, body: Any) -> str:
    """SHA-256 of what makes two requests the same: method, path, channel and the body's JSON value, all of
    it (`metadata` included), canonical: key order and whitespace do not matter, and neither does a `null`
    field against a missing one (null means absent, README "Request body"). Any JSON value hashes: the view
    refuses bodies with lone surrogates, and `surrogatepass` keeps one that got here anyway from being a 500."""
    canonical = json.dumps(
        {"method": method, "path": path, "channel": channel_id, "body": _without_nulls(body)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Claim:
    record_id: str
    owner: str
    message_id: str | None  # the inbound message stored by an earlier attempt, to reuse


@dataclass
class Replay:
    status: int
    body: bytes


def idempotency_claim(*, workspace_id: str, key: str, fingerprint: str, now: datetime) -> Claim | Replay:
    """Claim `key` for this request, or return the stored response to replay.

    Runs inside the accept transaction. Two first requests racing on one key both INSERT; the unique
    constraint makes the second wait for the first's commit and then raise IntegrityError, and the caller's
    retry of the transaction finds the record IN_PROGRESS (409).
    """
    # The caller sets the request's own lease once it knows the channel's agent (idempotency_attach_message).
    lock_until = now + timedelta(seconds=settings.PROCESSING_LEASE_SECONDS)
    owner = secrets.token_hex(8)
    expires_at = now + timedelta(seconds=settings.IDEMPOTENCY_RETENTION_SECONDS)
    claimed = _claim_or_read(
        workspace_id=workspace_id,
        key=key,
        fingerprint=fingerprint,
        owner=owner,
        locked_until=lock_until,
        expires_at=expires_at,
    )
    if isinstance(claimed, Claim):
        return claimed
    record = claimed
    if record is not None and record["expires_at"] <= now:
        # Past its retention the key is forgotten, as if the clean-up had already deleted it.
        IdempotencyRecord.objects.filter(pk=record["id"]).delete()
        record = None
    if record is None:
        created = IdempotencyRecord.objects.create(
            workspace_id=workspace_id,
            key=key,
            fingerprint=fingerprint,
            owner=owner,
            locked_until=lock_until,
            expires_at=expires_at,
        )
        return Claim(record_id=created.id, owner=owner, message_id=None)
    if record["fingerprint"] != fingerprint:
        raise IdempotencyKeyReused(
            "This idempotency key was already used with a different request. "
            "Send a new key for a new message, or repeat the original request exactly.",
            details={"header": "X-Idempotency-Key"},
        )
    if record["state"] == IdempotencyRecord.State.COMPLETED:
        status, body = record["response_status"], record["response_body"]
        # the record phase's last statement writes the state, the status and the body at once (api/flow/writes.py)
        assert status is not None and body is not None, "a COMPLETED record always has its response"
        return Replay(status=status, body=bytes(body))
    taken = (
        IdempotencyRecord.objects.filter(pk=record["id"])
        .filter(Q(state=IdempotencyRecord.State.RELEASED) | Q(locked_until__lt=now))
        .update(state=IdempotencyRecord.State.IN_PROGRESS, owner=owner, locked_until=lock_until)
    )
    if not taken:
        # The lock read above is stale when a concurrent retry took the key between the read and the UPDATE
        # (it was RELEASED, no lock at all, or expired): then the new holder has only just started.
        locked_until = record["locked_until"]
        remaining = (locked_until - now).total_seconds() if locked_until is not None else 0
        retry_after = max(1, math.ceil(min(remaining, 5)))
        raise IdempotencyInProgress(
            "A request with this idempotency key is still being processed. "
            f"Retry in {retry_after} seconds to get its response.",
            details={"header": "X-Idempotency-Key", "retryAfterSeconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
    return Claim(record_id=record["id"], owner=owner, message_id=record["message_id"])


_RECORD_FIELDS = (
    "id",
    "fingerprint",
    "state",
    "locked_until",
    "expires_at",
    "message_id",
    "response_status",
    "response_body",
)


def _record(*, workspace_id: str, key: str) -> dict[str, Any] | None:
    return IdempotencyRecord.objects.filter(workspace_id=workspace_id, key=key).values(*_RECORD_FIELDS).first()


def _claim_or_read(
    *, workspace_id: str, key: str, fingerprint: str, owner: str, locked_until: datetime, expires_at: datetime
) -> Claim | dict[str, Any] | None:
    """The common cases of `idempotency_claim` in one statement: a new key is claimed
    (`INSERT ... ON CONFLICT DO NOTHING`), else the existing record is read. When a concurrent first request
    inserted the key, the INSERT waits for it to commit and then does nothing, and the read, which sees the
    database as the statement began, finds no row: the record is read again, as the other request left it."""
    record = IdempotencyRecord(
        workspace_id=workspace_id,
        key=key,
        fingerprint=fingerprint,
        owner=owner,
        locked_until=locked_until,
        expires_at=expires_at,
    )
    table, values, params = insert_select(record)
    nulls = ", ".join(["NULL"] * (len(_RECORD_FIELDS) - 1))
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH ins AS (INSERT INTO {table} {values} ON CONFLICT (workspace_id, key) DO NOTHING RETURNING id) "
            f"SELECT TRUE, id, {nulls} FROM ins UNION ALL "
            f"SELECT FALSE, {', '.join(_RECORD_FIELDS)} FROM {table} WHERE workspace_id = %s AND key = %s "
            "AND NOT EXISTS (SELECT 1 FROM ins)",
            [*params, workspace_id, key],
        )
        row = cursor.fetchone()
    if row is None:
        return _record(workspace_id=workspace_id, key=key)
    if row[0]:
        return Claim(record_id=row[1], owner=owner, message_id=None)
    return dict(zip(_RECORD_FIELDS, row[1:], strict=True))


def idempotency_attach_message(*, claim: Claim, message_id: str, locked_until: datetime) -> None:
    """Keep the inbound message with the key, and lock the key for the request's lease (known only once
    the channel's agent is loaded, after the claim; see api.flow.messaging.lease_seconds)."""
    IdempotencyRecord.objects.filter(pk=claim.record_id).update(message_id=message_id, locked_until=locked_until)


def idempotency_lock_extend(*, claim: Claim, locked_until: datetime) -> None:
    """Keep the key locked until `locked_until` while its request is alive (it renews its lease while it
    waits for its conversation's turn). Only the owner may: a key another attempt took over is not ours."""
    IdempotencyRecord.objects.filter(
        pk=claim.record_id, owner=claim.owner, state=IdempotencyRecord.State.IN_PROGRESS
    ).update(locked_until=locked_until)


def idempotency_hold(*, claim: Claim) -> None:
    """Check that this attempt still owns the key, and keep it: the record's row stays locked until the
    caller's transaction ends, so no retry can take the key over before this attempt's result is stored.

    A live attempt renews its lock while it waits for its turn, and the lock covers its media step and its
    agent call (api.flow.messaging.lease_seconds); it can still outlive it when its process stalls
    (CPU starved, paused). A retry that took the key over adopted its inbound message and credit
    reservation, so the late attempt must store and settle nothing. Raises IdempotencyInProgress for it:
    the key's response is the new owner's, which the client gets by retrying.
    """
    with connection.cursor() as cursor:  # written by hand: the ORM's compiler costs more CPU
        cursor.execute(
            f"SELECT 1 FROM {quote(IdempotencyRecord._meta.db_table)} WHERE id = %s AND owner = %s FOR NO KEY UPDATE",
            [claim.record_id, claim.owner],
        )
        held = cursor.fetchone() is not None
    if not held:
        raise IdempotencyInProgress(
            "This request took longer than its idempotency lock and a retry with the same key took it over. "
            "Retry with the same key to get that retry's response.",
            details={"header": "X-Idempotency-Key", "retryAfterSeconds": 1},
            headers={"Retry-After": "1"},
        )


def idempotency_release(*, claim: Claim) -> bool:
    """Free the key after a failure the client may retry; the stored inbound message stays attached.
    Returns False when this attempt no longer owns the key (a retry took it over): the inbound message and
    its credit reservation are the new owner's then, and the caller must leave them alone."""
    return bool(
        IdempotencyRecord.objects.filter(pk=claim.record_id, owner=claim.owner).update(
            state=IdempotencyRecord.State.RELEASED, locked_until=None
        )
    )


def idempotency_message_id(*, workspace_id: str, key: str, fingerprint: str) -> str | None:
    """The inbound message a key's request stored, while that request is still being processed (a retry of
    an asynchronous request answers 202 with its ids); None otherwise."""
    return (
        IdempotencyRecord.objects.filter(
            workspace_id=workspace_id, key=key, fingerprint=fingerprint, state=IdempotencyRecord.State.IN_PROGRESS
        )
        .exclude(message_id=None)
        .values_list("message_id", flat=True)
        .first()
    )


def idempotency_owned(*, claim: Claim) -> bool:
    """Whether `claim` still holds its key (no retry took it over, nothing completed or released it)."""
    return IdempotencyRecord.objects.filter(
        pk=claim.record_id, owner=claim.owner, state=IdempotencyRecord.State.IN_PROGRESS
    ).exists()
