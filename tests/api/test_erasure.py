"""DELETE /api/v1/contacts/{id} (README "Erasing a contact"): nothing of the contact's words stays
anywhere in the database or the media storage; ids, counts and the ledger stay; idempotent; a message in
flight records nothing."""

import json
import os
import subprocess

import pytest
from django.apps import apps
from django.core.files.storage import default_storage
from django.db import connection

from api.maintenance.erasure import contact_erase
from api.models import IdempotencyRecord
from billing.models import UsageLedgerEntry
from contacts.models import Contact
from conversations.models import Conversation, MediaAsset, Message
from tests.conftest import SEED_TEXT, error_of
from tests.conversations.test_media_inspect import png_bytes
from tests.factories import ChannelFactory, WorkspaceFactory
from tests.webhooks.conftest import Receiver, Reply
from webhooks.delivery import delivery_attempt
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEvent
from webhooks.services import webhook_set

SECRETS = ["Jane.Secret@Example.com", "Jane Secretname", "my secret refund question", "SECRET-ORDER-77"]


@pytest.fixture(autouse=True)
def private_hosts(settings, tmp_path):
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = ["127.0.0.1", "localhost"]
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    settings.MEDIA_ROOT = tmp_path / "media"


def database_text() -> str:
    """Every row of every table of the project, as text: a dump of the database through SQL (it sees the
    test's own transaction, which pg_dump would not)."""
    chunks = []
    with connection.cursor() as cursor:
        for model in apps.get_models():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(model._meta.db_table)}")
            for row in cursor.fetchall():
                chunks.append(
                    " ".join(
                        bytes(v).decode("utf-8", "replace") if isinstance(v, (bytes, memoryview)) else str(v)
                        for v in row
                    )
                )
    return "\n".join(chunks)


def leaked(text: str) -> list[str]:
    lowered = text.lower()
    return [secret for secret in SECRETS if secret.lower() in lowered]


@pytest.fixture
def contact_history(api, channel, httpserver):
    """A contact with text and image messages, an idempotency key, metadata and a channel webhook."""
    webhook_set(channel_id=channel.pk, url="http://127.0.0.1:9/hook")
    httpserver.expect_request("/photo.png").respond_with_data(png_bytes(), content_type="image/png")
    first = {
        **SEED_TEXT,
        "contactIdentifier": SECRETS[0],
        "contactName": SECRETS[1],
        "content": {"text": {"body": SECRETS[2]}},
        "metadata": {"orderId": SECRETS[3]},
    }
    image = {
        "type": "IMAGE",
        "contactIdentifier": SECRETS[0].lower(),
        "content": {"image": {"url": httpserver.url_for("/photo.png"), "caption": SECRETS[2]}},
    }
    responses = [api.post(first, idempotency_key="key-1"), api.post(image)]
    assert [r.status_code for r in responses] == [200, 200], responses[1].content
    SECRETS.append(httpserver.url_for("/photo.png"))
    yield responses[0].json()
    SECRETS.pop()


def test_erasure_leaves_no_content_anywhere_and_keeps_ids_counts_and_the_ledger(
    client, api_key, workspace, contact_history
):
    contact_id = contact_history["contactId"]
    assert leaked(database_text())  # the check can fail: the secrets are there before
    (asset,) = MediaAsset.objects.all()
    stored_file = asset.file.name
    assert default_storage.exists(stored_file)
    ledger = list(UsageLedgerEntry.objects.values_list("pk", "delta"))
    message_ids = set(Message.objects.values_list("pk", flat=True))

    response = client.delete(f"/api/v1/contacts/{contact_id}", HTTP_X_API_KEY=api_key)

    assert response.status_code == 200, response.content
    assert response.json() == {"success": True, "erased": {"messages": len(message_ids), "media": 1}}
    assert leaked(database_text()) == []
    assert not default_storage.exists(stored_file)
    assert not MediaAsset.objects.exists()
    assert set(Message.objects.values_list("pk", flat=True)) == message_ids
    assert list(UsageLedgerEntry.objects.values_list("pk", "delta")) == ledger
    assert not IdempotencyRecord.objects.exists()
    assert set(WebhookEvent.objects.exclude(type="conversation.closed").values_list("payload", flat=True)) == {""}
    # the close of its active conversation is announced as every close is, with ids and times only
    (closed,) = WebhookEvent.objects.filter(type="conversation.closed")
    announced = json.loads(closed.payload)["data"]["conversation"]
    assert (announced["id"], announced["status"], announced["closeReason"]) == (
        contact_history["conversationId"],
        "CLOSED",
        "api",
    )
    assert closed.deliveries.get().status == "PENDING"
    assert not WebhookDelivery.objects.filter(status="PENDING").exclude(event__type="conversation.closed").exists()
    conversation = Conversation.objects.get(contact_id=contact_id)
    assert (conversation.status, conversation.erased_at is not None) == ("CLOSED", True)
    # and the read API shows the placeholders
    contact = client.get(f"/api/v1/contacts/{contact_id}", HTTP_X_API_KEY=api_key).json()["contact"]
    assert (contact["identifier"], contact["name"]) == (f"erased:{contact_id}", None)
    messages = client.get(f"/api/v1/conversations/{conversation.pk}/messages", HTTP_X_API_KEY=api_key).json()
    # as the README says: `{"erased": true}`, shown like every content with its lower-case type
    assert [m["content"] for m in messages["data"]] == [
        {"erased": True, "type": m["type"].lower()} for m in messages["data"]
    ]
    assert {m["metadata"] == {} for m in messages["data"]} == {True}
    message = client.get(f"/api/v1/messages/{contact_history['messageId']}", HTTP_X_API_KEY=api_key).json()
    assert message["result"] is None


def test_a_second_delete_answers_zeros_and_the_identifier_makes_a_new_contact(api, client, api_key, contact_history):
    contact_id = contact_history["contactId"]
    assert client.delete(f"/api/v1/contacts/{contact_id}", HTTP_X_API_KEY=api_key).status_code == 200

    again = client.delete(f"/api/v1/contacts/{contact_id}", HTTP_X_API_KEY=api_key)

    assert again.json() == {"success": True, "erased": {"messages": 0, "media": 0}}
    fresh = api.post({**SEED_TEXT, "contactIdentifier": SECRETS[0]})
    assert fresh.status_code == 200
    assert fresh.json()["contactId"] != contact_id
    assert fresh.json()["conversationId"] != contact_history["conversationId"]
    # an erased contact cannot be reached by its placeholder either
    placeholder = api.post({**SEED_TEXT, "contactIdentifier": f"erased:{contact_id}"})
    assert placeholder.json()["contactId"] not in (contact_id, fresh.json()["contactId"])


def test_erasure_runs_in_batches_and_finishes_what_an_interrupted_one_left(api, workspace, channel):
    for index in range(5):
        assert api.post({**SEED_TEXT, "content": {"text": {"body": f"{SECRETS[2]} {index}"}}}).status_code == 200
    contact_id = Contact.objects.get().pk
    # an earlier erasure died after its first step: the messages still hold their content
    Conversation.objects.update(erased_at="2026-11-01T00:00:00Z", status="CLOSED")

    erased = contact_erase(workspace_id=workspace.pk, contact_id=contact_id, batch_size=3)

    assert (erased.messages, erased.media) == (10, 0)
    assert not Message.objects.exclude(content={"erased": True}).exists()


def test_a_file_another_asset_names_is_kept(client, api_key, contact_history):
    (asset,) = MediaAsset.objects.all()
    other = WorkspaceFactory()
    ChannelFactory(workspace=other)
    MediaAsset.objects.create(
        workspace=other,
        url="https://other.example/same.png",
        url_sha256="0" * 64,
        sha256=asset.sha256,
        file=asset.file.name,
        mime_type=asset.mime_type,
        size=asset.size,
        expires_at=asset.expires_at,
    )

    response = client.delete(f"/api/v1/contacts/{contact_history['contactId']}", HTTP_X_API_KEY=api_key)

    assert response.json()["erased"]["media"] == 1
    assert default_storage.exists(asset.file.name)


def test_an_echoing_receivers_stored_answers_are_erased_too(client, api_key, channel, contact_history):
    # given: the receiver answered each event with the event itself, kept as the attempts' excerpts
    receiver = Receiver().start()
    try:
        receiver.plan.extend(Reply(echo=True) for _ in range(10))
        webhook_set(channel_id=channel.pk, url=receiver.url)
        for delivery in WebhookDelivery.objects.all():
            delivery_attempt(delivery_id=delivery.pk)
    finally:
        receiver.stop()
    assert WebhookAttempt.objects.filter(outcome="succeeded").count() == WebhookEvent.objects.count() > 0
    assert leaked("\n".join(WebhookAttempt.objects.values_list("response_excerpt", flat=True)))

    # when
    assert client.delete(f"/api/v1/contacts/{contact_history['contactId']}", HTTP_X_API_KEY=api_key).status_code == 200

    # then: no text column of any table holds the contact's words
    assert leaked(database_text()) == []
    assert set(WebhookAttempt.objects.values_list("response_excerpt", flat=True)) == {""}


def test_a_media_asset_another_contacts_message_uses_is_kept_until_that_one_goes(api, client, api_key, httpserver):
    # given: two contacts of the workspace sent the same image (one download, one cached asset)
    httpserver.expect_request("/shared.png").respond_with_data(png_bytes(), content_type="image/png")
    image = {"type": "IMAGE", "content": {"image": {"url": httpserver.url_for("/shared.png")}}}
    first = api.post({**image, "contactIdentifier": "first@example.com"}).json()
    second = api.post({**image, "contactIdentifier": "second@example.com"}).json()
    (asset,) = MediaAsset.objects.all()
    assert Message.objects.filter(media_asset=asset).count() == 2

    # when: the first contact is erased
    response = client.delete(f"/api/v1/contacts/{first['contactId']}", HTTP_X_API_KEY=api_key)

    # then: the second contact's message keeps its asset, its file and its text
    assert response.json()["erased"]["media"] == 0
    assert Message.objects.get(pk=second["messageId"]).media_asset_id == asset.pk
    assert default_storage.exists(asset.file.name)
    assert Message.objects.get(pk=first["messageId"]).media_asset_id is None

    # and when the second goes too, so does the asset
    response = client.delete(f"/api/v1/contacts/{second['contactId']}", HTTP_X_API_KEY=api_key)
    assert response.json()["erased"]["media"] == 1
    assert not MediaAsset.objects.exists()
    assert not default_storage.exists(asset.file.name)


def test_a_message_in_flight_during_the_erasure_records_nothing(api, workspace, channel, scripted_agent):
    assert api.post().status_code == 200
    contact_id = Contact.objects.get().pk

    def erase_meanwhile(**kwargs):
        contact_erase(workspace_id=workspace.pk, contact_id=contact_id)
        return "a reply that must not be stored"

    scripted_agent.take_over(channel.agent).script(erase_meanwhile)

    response = api.post({**SEED_TEXT, "content": {"text": {"body": SECRETS[2]}}})

    assert error_of(response, status=409)["code"] == "contact_erased"
    assert leaked(database_text()) == []
    assert not Message.objects.filter(content__text__body="a reply that must not be stored").exists()
    late = Message.objects.get(direction="INBOUND", seq=2)
    assert (late.status, late.error_code, late.result) == ("FAILED", "contact_erased", None)
    workspace.refresh_from_db()
    assert workspace.credit_reserved == 0


requires_pg_dump = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
    reason="needs PostgreSQL (set DATABASE_URL=postgres://...): the dump is pg_dump's",
)


def test_statements_of_an_erasure(api, client, api_key, assert_statements):
    # a contact with one conversation of two messages (no media, no webhook, no idempotency key)
    contact_id = api.post().json()["contactId"]
    client.get("/api/v1/usage", HTTP_X_API_KEY=api_key)  # the key's last_used_at is fresh

    # the key; the contact's check; its identifier; its conversations closed, and marked erased; its
    # idempotency records; its webhook deliveries, and events; its conversations' ids; per conversation one
    # batch read, its UPDATE and the DELETE of its HTTP tool calls (a batch shorter than ERASE_BATCH_SIZE is
    # the last)
    with assert_statements(15):  # the attempts' answers: one UPDATE; the close's event: its conversation, its webhook
        response = client.delete(f"/api/v1/contacts/{contact_id}", HTTP_X_API_KEY=api_key)

    assert response.json()["erased"] == {"messages": 2, "media": 0}


@requires_pg_dump
@pytest.mark.django_db(transaction=True)
def test_pg_dump_of_the_database_holds_no_erased_string(client, settings, tmp_path):
    from billing.credits import credits_grant
    from tests.conftest import Api
    from tests.factories import api_key_for

    workspace = WorkspaceFactory()
    credits_grant(workspace=workspace, amount=10)
    channel = ChannelFactory(workspace=workspace)
    key = api_key_for(workspace)[1]
    api = Api(client, channel, key)
    body = {**SEED_TEXT, "contactIdentifier": SECRETS[0], "contactName": SECRETS[1]}
    body["content"] = {"text": {"body": SECRETS[2]}}
    first = api.post({**body, "metadata": {"orderId": SECRETS[3]}}, idempotency_key="pg-dump-key")
    assert first.status_code == 200

    assert client.delete(f"/api/v1/contacts/{first.json()['contactId']}", HTTP_X_API_KEY=key).status_code == 200

    name = connection.settings_dict["NAME"]
    conf = connection.settings_dict
    env = {**os.environ, "PGHOST": conf["HOST"] or "127.0.0.1", "PGPORT": str(conf["PORT"] or 5432)}
    env["PGUSER"] = conf.get("USER") or "postgres"
    dump = subprocess.run(["pg_dump", "--data-only", name], env=env, capture_output=True, check=True, timeout=60)
    text = dump.stdout.decode("utf-8", "replace")
    assert "pg-dump-key" not in text  # the idempotency record went with its response body
    assert leaked(text) == []


def test_a_message_accepted_while_the_erasure_commits_is_refused(api):
    # given the interleaving where a request found the contact and its conversation just before the
    # erasure's first step committed (the contact's identifier is still the old one in its snapshot)
    assert api.post().status_code == 200
    Conversation.objects.update(erased_at="2026-11-01T00:00:00Z")

    # when its accept phase takes the conversation's next position
    response = api.post({**SEED_TEXT, "content": {"text": {"body": SECRETS[2]}}})

    # then nothing is stored in the erased conversation
    assert error_of(response, status=409)["code"] == "contact_erased"
    assert Message.objects.filter(direction="INBOUND").count() == 1
    assert leaked(database_text()) == []
