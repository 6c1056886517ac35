"""The request body's rules beyond the spec (README "Request body"): unknown fields refused, null is absent,
a text body kept as sent, and `metadata`."""

import pytest

from api.models import IdempotencyRecord
from contacts.models import Contact
from conversations.models import Message
from tests.conftest import SEED_TEXT, error_of

ALLOWED = "contactIdentifier, contactName, content, metadata, type"
NOT_A_STRING = "Send a string of at most 512 characters; numbers, booleans, null, objects and lists are not accepted."


def refused(response) -> dict:
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert Message.objects.count() == 0
    return error


# --- unknown fields ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["contactId", "Type", "conversation", "contact_identifier"])
def test_an_unknown_top_level_field_is_refused_by_name_with_the_allowed_ones(api, field):
    error = refused(api.post({**SEED_TEXT, field: "x"}))
    assert error["details"] == {field: f"Unknown field. Allowed: {ALLOWED}."}
    assert field in error["message"]


# --- null is absent ---------------------------------------------------------------------------------------


def test_null_for_an_optional_field_is_the_field_left_out(api):
    response = api.post({**SEED_TEXT, "contactName": None, "metadata": None})

    assert response.status_code == 200, response.content
    assert Contact.objects.get().name == ""
    assert Message.objects.get(direction="INBOUND").metadata == {}


@pytest.mark.parametrize(
    ("type_", "content", "stored"),
    [
        (
            "IMAGE",
            {"image": {"url": "https://example.com/a.jpg", "caption": None}},
            {"image": {"url": "https://example.com/a.jpg"}},
        ),
        (
            "DOCUMENT",
            {"document": {"url": "https://example.com/a.pdf", "filename": None, "caption": None}},
            {"document": {"url": "https://example.com/a.pdf"}},
        ),
    ],
)
def test_null_caption_and_filename_are_left_out(api, monkeypatch, type_, content, stored):
    from api.flow import messaging

    seen = []
    monkeypatch.setattr(messaging, "media_prepare", lambda **kwargs: seen.append(kwargs["message"].content))
    response = api.post({**SEED_TEXT, "type": type_, "content": content})

    assert response.status_code == 200, response.content
    assert seen == [stored]
    assert Message.objects.get(direction="INBOUND").content == stored


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**SEED_TEXT, "contactIdentifier": None}, "contactIdentifier"),
        ({**SEED_TEXT, "type": None}, "type"),
        ({**SEED_TEXT, "content": None}, "content"),
        ({**SEED_TEXT, "content": {"text": {"body": None}}}, "content.text.body"),
        ({**SEED_TEXT, "type": "IMAGE", "content": {"image": {"url": None}}}, "content.image.url"),
    ],
)
def test_null_for_a_required_field_is_refused(api, body, field):
    assert field in refused(api.post(body))["details"]


def test_a_null_field_and_a_missing_one_are_the_same_request_for_idempotency(api):
    first = api.post({**SEED_TEXT, "metadata": None}, idempotency_key="null-is-absent")
    replay = api.post(SEED_TEXT, idempotency_key="null-is-absent")

    assert first.status_code == replay.status_code == 200
    assert replay["Idempotent-Replayed"] == "true" and replay.content == first.content


# --- the text body ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["  indented code\n    more", "line one\n\n-- \nsignature\n", "\tTabbed", " x "])
def test_a_text_body_keeps_its_leading_and_trailing_whitespace(api, text):
    response = api.post({**SEED_TEXT, "content": {"text": {"body": text}}})

    assert response.status_code == 200, response.content
    assert Message.objects.get(direction="INBOUND").content == {"text": {"body": text}}


@pytest.mark.parametrize("text", ["", " ", "\n\t  \n"])
def test_an_all_whitespace_body_is_refused(api, text):
    error = refused(api.post({**SEED_TEXT, "content": {"text": {"body": text}}}))
    assert error["details"] == {"content.text.body": "This field may not be blank."}


def test_the_identifier_and_name_are_still_trimmed(api):
    assert (
        api.post({**SEED_TEXT, "contactIdentifier": "  user@example.com ", "contactName": " Jane "}).status_code == 200
    )
    assert Contact.objects.values_list("identifier", "name").get() == ("user@example.com", "Jane")


# --- metadata ---------------------------------------------------------------------------------------------


def test_metadata_is_stored_with_the_message(api):
    metadata = {"orderId": "A-1001", "plan": "gold", "empty": "", "emoji": "\U0001f600", "k" * 64: "v" * 512}

    response = api.post({**SEED_TEXT, "metadata": metadata})

    assert response.status_code == 200, response.content
    assert Message.objects.get(direction="INBOUND").metadata == metadata
    assert Message.objects.get(direction="OUTBOUND").metadata == {}


def test_sixteen_keys_are_allowed(api):
    assert api.post({**SEED_TEXT, "metadata": {f"key{n}": "v" for n in range(16)}}).status_code == 200


@pytest.mark.parametrize(
    ("metadata", "details"),
    [
        ("plan=gold", {"metadata": 'Send a flat JSON object of string values, e.g. {"orderId": "A-1001"}.'}),
        (["plan"], {"metadata": 'Send a flat JSON object of string values, e.g. {"orderId": "A-1001"}.'}),
        ({f"key{n}": "v" for n in range(17)}, {"metadata": "Send at most 16 keys; this object has 17."}),
        ({"": "v"}, {"metadata": "A key is empty. Send keys of 1 to 64 characters."}),
        ({"k" * 65: "v"}, {f"metadata.{'k' * 65}": "The key is 65 characters long. Send keys of 1 to 64 characters."}),
        ({"plan": "v" * 513}, {"metadata.plan": "The value is 513 characters long. Send at most 512."}),
        (
            {"plan": "gold", "seats": 3},
            {"metadata.seats": NOT_A_STRING},
        ),
        (
            {"plan": {"tier": "gold"}},
            {"metadata.plan": NOT_A_STRING},
        ),
        (
            {"plan": None},
            {"metadata.plan": NOT_A_STRING},
        ),
        ({"plan": "go\x00ld"}, {"metadata.plan": "contains U+0000 (NUL)"}),
    ],
)
def test_bad_metadata_is_refused_naming_the_key(api, metadata, details):
    error = refused(api.post({**SEED_TEXT, "metadata": metadata}))
    assert error["details"] == details


def test_metadata_is_part_of_the_idempotency_fingerprint(api):
    first = api.post({**SEED_TEXT, "metadata": {"plan": "gold"}}, idempotency_key="meta-1")
    same = api.post({**SEED_TEXT, "metadata": {"plan": "gold"}}, idempotency_key="meta-1")
    other = api.post({**SEED_TEXT, "metadata": {"plan": "silver"}}, idempotency_key="meta-1")

    assert first.status_code == same.status_code == 200 and same["Idempotent-Replayed"] == "true"
    assert other.status_code == 422 and error_of(other)["code"] == "idempotency_key_reused"
    assert IdempotencyRecord.objects.count() == 1


# --- the serializers' fields, built once (api.serializers._FieldsBuiltOnce) ------------------------------


def test_bodies_checked_one_after_another_share_fields_but_not_results():
    from api.serializers import InboundMessageSerializer

    bad = InboundMessageSerializer(data={**SEED_TEXT, "content": {"text": {"body": " "}}, "metadata": {"": "x"}})
    good = InboundMessageSerializer(data={**SEED_TEXT, "metadata": {"orderId": "A-1"}})

    assert not bad.is_valid()
    assert good.is_valid(), good.errors
    assert InboundMessageSerializer(data={**SEED_TEXT, "type": "FAX"}).is_valid() is False

    assert good.fields is bad.fields  # built once for the class
    assert set(bad.errors) == {"metadata"}  # the field-level error stops before the content's check
    assert good.validated_data["metadata"] == {"orderId": "A-1"}
    assert good.validated_data["content"] == SEED_TEXT["content"]
