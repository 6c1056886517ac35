"""The messages endpoint's writes (api/flow/writes.py, config/statements.py, the hand-written reads)
against what a hostile integrator sends: every value at its limit and full of what SQL, psycopg's client-side
binding and JSON treat specially, stored and read back exactly; a 402 and a reservation the clean-up took
back meanwhile, which must leave nothing behind; and every row written checked against its model. The races
and the connection failures are in tests/concurrency/test_hot_path_*.py."""

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Model
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

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
from channels_app.models import Workspace
from config.statements import quote
from contacts.models import Contact
from conversations.models import Conversation, Message
from tests.conftest import SEED_TEXT, Api, error_of
from tests.factories import ChannelFactory, WorkspaceFactory, api_key_for
from webhooks.models import WebhookEvent
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


def _project_models() -> list[type[Model]]:
    """Every model of the project's own apps (not Django's nor a library's), from the app registry."""
    base = Path(settings.BASE_DIR).resolve()
    return [
        model
        for model in apps.get_models()
        if Path(model._meta.app_config.path).resolve().is_relative_to(base) and model._meta.managed
    ]


def _snapshot() -> dict[type[Model], dict[Any, dict[str, Any]]]:
    """Every row of every project model, by model and primary key, each as its fields' values."""
    return {
        model: {
            row["pk"]: row
            for row in model._default_manager.values("pk", *(field.attname for field in model._meta.concrete_fields))
        }
        for model in _project_models()
    }


def _conversation_of_requests(django_settings) -> list:
    """A new workspace and channel (with a webhook) and the same requests every time: a new contact's first
    message with metadata and a key, its second under another spelling, the key replayed, the conversation
    closed, a message that opens a new one, a second contact by phone. Returns the responses."""
    django_settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    workspace = WorkspaceFactory.create()
    credits_grant(workspace=workspace, amount=100, note="rows test")
    channel = ChannelFactory.create(workspace=workspace)
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
    return responses


def _model_problems(model: type[Model], row: dict[str, Any], *, since: datetime, until: datetime) -> list[str]:
    """What in a written row the model does not allow: a value its field refuses (type, length, choices, a
    NULL where the field has none; an empty string is allowed, as the ORM writes them too), an automatic
    time outside the requests' span, an id not of the kind its field's default makes."""
    instance = model._default_manager.get(pk=row["pk"])
    problems = []
    try:
        instance.clean_fields()
    except ValidationError as error:
        for name, errors in error.error_dict.items():
            problems += [f"{name}: {e.messages}" for e in errors if e.code != "blank"]
    for field in model._meta.concrete_fields:
        value = getattr(instance, field.attname)
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            if value is None or not since <= value <= until:
                problems.append(f"{field.name}: {value} is not a time of the requests")
        made = field.get_default() if field.primary_key and callable(field.default) else None
        if isinstance(made, str) and "_" in made:  # config.ids: `<kind>_<ulid>`
            kind = made.partition("_")[0]
            if not str(value).startswith(f"{kind}_"):
                problems.append(f"{field.name}: {value} is not a {kind}_ id")
    return problems


def test_every_row_the_statements_write_is_one_the_models_allow(db, settings):
    """The tables are the project's models (not a list here): every row the requests add or change, in every
    table a statement inserts into, is checked against its model's fields; the bodies stored for GET
    /api/v1/messages/{id} and for replays are the responses' bytes."""
    before = _snapshot()
    since = timezone.now()
    with CaptureQueriesContext(connection) as queries:
        responses = _conversation_of_requests(settings)
    until = timezone.now()
    after = _snapshot()

    written = {
        model: [row for pk, row in rows.items() if before[model].get(pk) != row]
        for model, rows in after.items()
        if rows != before[model]
    }
    inserted_into = {
        model
        for model in _project_models()
        if any(f"INSERT INTO {quote(model._meta.db_table)}" in q["sql"] for q in queries.captured_queries)
    }
    assert inserted_into and inserted_into <= set(written), inserted_into - set(written)
    problems = {
        f"{model.__name__} {row['pk']}": found
        for model, rows in written.items()
        for row in rows
        if (found := _model_problems(model, row, since=since, until=until))
    }
    assert problems == {}
    new_messages = [row for row in written[Message] if row["pk"] not in before[Message]]
    assert len(new_messages) == 8 and len(written[WebhookEvent]) == 5  # 4 inbound, 4 replies; 5 events
    # the stored bodies are the bytes answered, for GET /api/v1/messages/{id} and for the key's replay
    for response in responses:
        if "messageId" in response.json():
            assert bytes(Message.objects.get(pk=response.json()["messageId"]).result) == response.content
    stored = IdempotencyRecord.objects.filter(key="k-1").values_list("response_body", flat=True).get()
    assert bytes(stored) == responses[0].content == responses[2].content
