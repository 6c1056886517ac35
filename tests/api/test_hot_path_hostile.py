"""The messages endpoint's PostgreSQL hot path (api/flow/hot_path.py, config/statements.py, the hand-written reads)
against what a hostile integrator sends: every value at its limit and full of what SQL, psycopg's client-side
binding and JSON treat specially, stored and read back exactly; a 402 and a reservation the clean-up took
back meanwhile, which must leave nothing behind; and, row by row, the same writes as the ORM path (the one
SQLite runs). The races and the connection failures are in tests/concurrency/test_hot_path_*.py."""

import json
import os
import re
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from analytics.models import LATENCY_FIELDS, MessageDay
from api.flow import hot_path
from api.maintenance.cleanup import abandoned_messages_release
from api.models import IdempotencyRecord
from api.serializers import (
    CONTACT_IDENTIFIER_MAX,
    CONTACT_NAME_MAX,
    METADATA_KEY_MAX,
    METADATA_MAX_KEYS,
    METADATA_VALUE_MAX,
    TEXT_BODY_MAX,
)
from billing.credits import credits_grant
from billing.models import UsageLedgerEntry
from channels_app.models import AIAgent, Workspace
from contacts.models import Contact
from conversations.models import Conversation, Message
from tests.conftest import SEED_TEXT, Api, error_of
from tests.factories import ChannelFactory, WorkspaceFactory, api_key_for
from webhooks.models import WebhookDelivery, WebhookEvent
from webhooks.services import webhook_set

# What SQL (quotes, backslashes), psycopg's client-side parameter binding (`%s`, `%(name)s`, a lone `%`),
# str.format ({}) and JSON (quotes, backslashes, escapes) treat specially, with emoji (outside the BMP),
# right-to-left text, a combining accent, a bidi override and DEL.
HOSTILE = "%s %% %(x)s % {} {0} ' '' \" \\ \\\\ \\u0041 \\n ;-- 😀👩‍👩‍👧 שלום e\u0301 \u202e \x7f"


def padded(text: str, length: int, fill: str = "x") -> str:
    """`text` filled up to exactly `length` characters (code points, as the limits count them)."""
    return (text + fill * length)[:length]


def hostile_body(identifier: str) -> dict[str, Any]:
    metadata = {
        padded(f"{index:02d}{HOSTILE}", METADATA_KEY_MAX): padded(f"{index}{HOSTILE}", METADATA_VALUE_MAX, "é")
        for index in range(METADATA_MAX_KEYS)
    }
    return {
        "type": "TEXT",
        "contactIdentifier": identifier,
        "contactName": padded(f"Ñame {HOSTILE}", CONTACT_NAME_MAX, "😀"),
        "content": {"text": {"body": padded(f"Body {HOSTILE}", TEXT_BODY_MAX, "ש")}},
        "metadata": metadata,
    }


# An identifier of every kind at its limit: exact (and hostile), an e-mail whose lower-cased key is twice
# its length ("İ".lower() is two characters), a phone number whose key keeps only its digits.
IDENTIFIERS = {
    "exact": padded(f"id {HOSTILE}", CONTACT_IDENTIFIER_MAX),
    "e-mail": "İ" * (CONTACT_IDENTIFIER_MAX - len("@example.com")) + "@example.com",
    "phone": padded("+1 (555) ", CONTACT_IDENTIFIER_MAX - 1, "-") + "9",
}
# The idempotency key at its limit: 255 printable ASCII characters, with `%s`, quotes and backslashes.
IDEMPOTENCY_KEY = padded("%s%%%(x)s'\"\\ {}", 255, "%")


@pytest.mark.parametrize("kind", list(IDENTIFIERS))
def test_every_value_at_its_limit_and_full_of_special_characters_is_stored_and_read_back_exactly(
    api, client, api_key, scripted_agent, channel, kind
):
    scripted_agent.take_over(channel.agent)
    body = hostile_body(IDENTIFIERS[kind])

    # when: the contact's first message (the accept statement with a new contact) and its second (a known
    # contact's next position, then the history window), each with a key, the first also replayed
    # (as UTF-8: escaped as \\uXXXX, the values at their limits would pass the body's size limit)
    first = api.post(raw=json.dumps(body, ensure_ascii=False), idempotency_key=IDEMPOTENCY_KEY)
    second_body = {**body, "content": {"text": {"body": body["content"]["text"]["body"][::-1]}}}
    second = api.post(raw=json.dumps(second_body, ensure_ascii=False), idempotency_key=IDEMPOTENCY_KEY[::-1])
    replay = api.post(raw=json.dumps(body, ensure_ascii=False), idempotency_key=IDEMPOTENCY_KEY)

    # then: one contact, one conversation, the replay byte for byte
    assert (first.status_code, second.status_code) == (200, 200), (first.content, second.content)
    assert (replay.content, replay["Idempotent-Replayed"]) == (first.content, "true")
    assert first.json()["contactId"] == second.json()["contactId"]
    assert first.json()["conversationId"] == second.json()["conversationId"]
    # and the rows hold exactly what was sent
    contact = Contact.objects.get()
    assert (contact.identifier, contact.name) == (body["contactIdentifier"], body["contactName"])
    inbound = list(Message.objects.filter(direction="INBOUND").order_by("seq"))
    assert [(m.content, m.metadata) for m in inbound] == [
        (body["content"], body["metadata"]),
        (second_body["content"], body["metadata"]),
    ]
    assert [bytes(m.result) for m in inbound] == [first.content, second.content]
    assert sorted(IdempotencyRecord.objects.values_list("key", flat=True)) == sorted(
        [IDEMPOTENCY_KEY, IDEMPOTENCY_KEY[::-1]]
    )
    # and the agent saw them so: the metadata with the message, the first exchange in the second's history
    calls = scripted_agent.calls
    assert (calls[0].history[-1].content, calls[0].history[-1].metadata) == (body["content"], body["metadata"])
    assert [item.content for item in calls[1].history[:-1]] == [
        body["content"],
        {"text": {"body": first.json()["aiMessages"][0]["content"]["text"]["body"]}},
    ]
    # and the read API returns them unchanged (the content with its lowercase `type`, as the contract shows it)
    read = client.get(f"/api/v1/conversations/{first.json()['conversationId']}/messages", HTTP_X_API_KEY=api_key)
    rows = [row for row in read.json()["data"] if row["direction"] == "INBOUND"]
    assert [(row["content"], row["metadata"]) for row in rows] == [
        ({**body["content"], "type": "text"}, body["metadata"]),
        ({**second_body["content"], "type": "text"}, body["metadata"]),
    ]
    shown = client.get(f"/api/v1/contacts/{contact.pk}", HTTP_X_API_KEY=api_key).json()["contact"]
    assert (shown["identifier"], shown["name"]) == (body["contactIdentifier"], body["contactName"])


def test_a_402_for_a_known_contact_leaves_the_conversation_and_the_key_as_they_were(
    api, workspace, channel, scripted_agent
):
    # given: a conversation, and every credit held by messages in flight
    scripted_agent.take_over(channel.agent)
    first = api.post().json()
    conversation = Conversation.objects.get()
    Workspace.objects.filter(pk=workspace.pk).update(credit_reserved=99)

    # when: the contact's next message (its position taken, then the reservation fails in the same statement)
    refused = api.post(idempotency_key="refused-%s")

    # then: nothing of it is kept: not its position, not its time, not the key
    assert error_of(refused, status=402)["details"] == {"available": 0, "required": 1}
    stored = Conversation.objects.get()
    assert (stored.last_seq, stored.last_message_at) == (1, conversation.last_message_at)
    assert Message.objects.filter(direction="INBOUND").count() == 1
    assert not IdempotencyRecord.objects.exists()
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (99, 99)

    # and once credits are free, the same key is a new request at the next position
    Workspace.objects.filter(pk=workspace.pk).update(credit_reserved=0)
    retried = api.post(idempotency_key="refused-%s")
    assert retried.status_code == 200 and retried.json()["conversationId"] == first["conversationId"]
    assert Message.objects.get(pk=retried.json()["messageId"]).seq == 2


def test_a_reservation_the_clean_up_gave_back_meanwhile_is_not_taken_from_the_others_in_flight(
    api, workspace, channel, scripted_agent
):
    """The record phase's settlement subtracts the message's reservation from the workspace's; when the clean-up
    already gave it back and other messages hold reservations, that subtraction succeeds (no check constraint
    fires) and only the message's own UPDATE finds its reservation gone: the record must roll back and charge
    nothing, not take the credit from the others' reservations (api.flow.messaging._ReservationGone)."""

    # given: 5 credits reserved by other messages in flight, and a clean-up that judges this request dead
    # while its agent thinks
    def slow_agent(**kwargs):
        assert abandoned_messages_release(now=timezone.now() + timedelta(days=1)) == (1, 1)

    scripted_agent.take_over(channel.agent).script(slow_agent)
    Workspace.objects.filter(pk=workspace.pk).update(credit_reserved=5)

    # when
    response = api.post(idempotency_key="gone-meanwhile")

    # then: answered for free, the others' reservations untouched, the key completed with that answer
    assert response.status_code == 200, response.content
    assert response.json()["usage"]["credits"] == 0
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (100, 5)
    assert not UsageLedgerEntry.objects.filter(kind="CHARGE").exists()
    inbound = Message.objects.get(direction="INBOUND")
    assert (inbound.status, inbound.credits_reserved, bytes(inbound.result)) == ("ANSWERED", 0, response.content)
    assert inbound.replies.get().credits == 0
    assert bytes(IdempotencyRecord.objects.get().response_body) == response.content


# --- the same rows as the ORM path -------------------------------------------------------------------------

_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


class _Rows:
    """A workspace's rows of the tables the messages endpoint writes, with what differs between two runs of
    the same requests (ids, times, random owners) replaced by stand-ins: ids by their kind and the order of
    first sight, so that the references between rows still have to match."""

    def __init__(self, workspace: Workspace, channel) -> None:
        self.ids: dict[str, str] = {workspace.pk: "workspace", channel.pk: "channel", channel.agent_id: "agent"}
        self.tables = {
            "contact": self._rows(Contact.objects.filter(workspace=workspace).order_by("created_at")),
            "conversation": self._rows(Conversation.objects.filter(workspace=workspace).order_by("created_at")),
            "message": self._rows(
                Message.objects.filter(conversation__workspace=workspace).order_by(
                    "conversation__created_at", "seq", "part"
                )
            ),
            "ledger": self._rows(UsageLedgerEntry.objects.filter(workspace=workspace).order_by("created_at")),
            "idempotency": self._rows(IdempotencyRecord.objects.filter(workspace=workspace).order_by("created_at")),
            "rollup": self._rows(MessageDay.objects.filter(workspace=workspace).order_by("day", "error_code")),
            "event": self._rows(WebhookEvent.objects.filter(workspace=workspace).order_by("created_at")),
            "delivery": self._rows(
                WebhookDelivery.objects.filter(event__workspace=workspace).order_by("event__created_at")
            ),
            "workspace": self._rows(Workspace.objects.filter(pk=workspace.pk)),
        }

    def _rows(self, queryset) -> list[dict[str, Any]]:
        model = queryset.model
        rows = list(queryset.values(*(field.attname for field in model._meta.concrete_fields)))
        for row in rows:
            row["id"] = self.ids.setdefault(str(row["id"]), f"{model.__name__}#{len(self.ids)}")
        return [self._row(row) for row in rows]

    def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {name: self._value(value) for name, value in row.items()}
        for random in ("owner", "fingerprint", "secret_encrypted", "name", "slug"):  # made per run
            if row.get(random):
                row[random] = "<set>"
        # The agent's measured time varies from run to run: only that one latency was counted.
        if "agent_ms" in row:
            row["latency_counted"] = sum(row.pop(name) for name in LATENCY_FIELDS)
            row["agent_ms"] = "<measured>"
        return row

    def _value(self, value: Any) -> Any:
        if isinstance(value, (bytes, memoryview)):
            return self._value(json.loads(bytes(value)))
        if isinstance(value, str) and value[:1] in "{[":
            try:
                return self._value(json.loads(value))
            except ValueError:
                return value
        if isinstance(value, dict):
            return {key: self._value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._value(item) for item in value]
        if isinstance(value, datetime) or (isinstance(value, str) and _ISO.match(value)):
            return "<time>"
        if isinstance(value, date):
            return "<day>"
        if isinstance(value, str) and value in self.ids:
            return self.ids[value]
        if isinstance(value, str) and re.fullmatch(r"[a-z]{2,4}_[0-9a-z]{26}", value):
            return self.ids.setdefault(value, f"ref#{len(self.ids)}")  # a row not read yet (its own table later)
        return value


def _conversation_of_requests(settings) -> _Rows:
    """A new workspace and channel (with a webhook) and the same requests every time: a new contact's first
    message with metadata and a key, its second under another spelling, the key replayed, the conversation
    closed, a message that opens a new one, a second contact by phone; then the workspace's rows."""
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    workspace = WorkspaceFactory.create()
    credits_grant(workspace=workspace, amount=100, note="differential test")
    channel = ChannelFactory.create(workspace=workspace)
    AIAgent.objects.filter(pk=channel.agent_id).update(name="Agent")
    webhook_set(channel_id=channel.pk, url="http://127.0.0.1:9/hook")
    key = api_key_for(workspace)[1]
    api = Api(Client(), channel, key)
    first = {**SEED_TEXT, "contactIdentifier": "Dana@Example.com", "metadata": {"orderId": "o-%s"}}
    responses = [
        api.post(first, idempotency_key="k-1"),
        api.post({**SEED_TEXT, "contactIdentifier": "dana@example.com", "contactName": None}),
        api.post(first, idempotency_key="k-1"),
    ]
    conversation_id = responses[0].json()["conversationId"]
    responses.append(Client().post(f"/api/v1/conversations/{conversation_id}/close", HTTP_X_API_KEY=key))
    responses.append(api.post({**SEED_TEXT, "contactIdentifier": "DANA@example.com"}))
    responses.append(api.post({**SEED_TEXT, "contactIdentifier": "+1 555 010 0"}, idempotency_key="k-2"))
    assert [r.status_code for r in responses] == [200] * len(responses), [r.content for r in responses]
    return _Rows(workspace, channel)


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
    reason="needs PostgreSQL (set DATABASE_URL=postgres://...): only there do the phases write through the "
    "statements of api/flow/hot_path.py; SQLite runs the ORM path both times",
)
def test_the_statements_write_the_same_rows_as_the_orm_path(db, settings, monkeypatch):
    """Every column of every row the hot path writes (contact, conversations, messages and replies, ledger,
    daily rollup, idempotency records, webhook events, the workspace's credits) as the ORM functions write
    them: defaults, times set, statuses, credits, the stored 200 bodies and the references between rows."""
    assert hot_path.enabled()
    through_statements = _conversation_of_requests(settings)
    monkeypatch.setattr(hot_path, "enabled", lambda: False)
    through_the_orm = _conversation_of_requests(settings)

    for table, rows in through_the_orm.tables.items():
        assert through_statements.tables[table] == rows, table
    assert len(through_the_orm.tables["message"]) == 8 and len(through_the_orm.tables["event"]) == 5
    assert connection.vendor == "postgresql"
