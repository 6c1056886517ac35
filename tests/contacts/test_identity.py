"""Which contact a `contactIdentifier` reaches (README "Request body"): trimmed, e-mail addresses without
regard to case, `+` phone numbers by their digits, everything else exactly. On SQLite and PostgreSQL alike."""

import pytest

from contacts.identity import identifier_key
from contacts.models import Contact
from conversations.models import Conversation, Message
from tests.api.test_query_counts import EXISTING_CONTACT
from tests.conftest import SEED_TEXT


def post_as(api, identifier: str, body: str = "hello", **fields):
    response = api.post({**SEED_TEXT, "contactIdentifier": identifier, "content": {"text": {"body": body}}, **fields})
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.parametrize(
    ("identifier", "key"),
    [
        ("jane@example.com", "jane@example.com"),
        ("Jane@Example.COM", "jane@example.com"),
        ("  JANE@example.com\t", "jane@example.com"),
        ("J.Doe+tag@Sub.Example.org", "j.doe+tag@sub.example.org"),
        ("+15550100", "+15550100"),
        ("+1 (555) 010-0", "+15550100"),
        ("+1.555.010.0", "+15550100"),
        (" +44 20 7946 0000 ", "+442079460000"),
        # not an e-mail address: exact, after trimming
        ("@handle", "@handle"),
        ("@Handle", "@Handle"),
        ("a@b@c", "a@b@c"),
        ("A@B@C", "A@B@C"),
        ("user@localhost", "user@localhost"),  # no dot in the domain
        ("User Name@example.com", "User Name@example.com"),  # whitespace inside
        # not a phone number: exact, after trimming
        ("+", "+"),
        ("+1 555 CALL", "+1 555 CALL"),
        ("15550100", "15550100"),  # no "+": a customer number, say
        ("+\u0661\u0662", "+\u0661\u0662"),  # other scripts' digits are not folded into ASCII ones
        ("CustomerID-42", "CustomerID-42"),
        ("  spaced out  ", "spaced out"),
    ],
)
def test_identifier_key(identifier, key):
    assert identifier_key(identifier) == key
    assert identifier_key(key) == key  # a key is its own key: the one unique constraint settles every spelling


def test_three_spellings_of_one_address_are_one_contact_with_the_first_spelling(api):
    first = post_as(api, "Jane.Doe@Example.com", contactName="Jane")
    second = post_as(api, "jane.doe@example.com")
    third = post_as(api, "  JANE.DOE@EXAMPLE.COM ")

    assert first["contactId"] == second["contactId"] == third["contactId"]
    assert first["conversationId"] == second["conversationId"] == third["conversationId"]
    contact = Contact.objects.get()
    assert (contact.identifier, contact.identifier_key) == ("Jane.Doe@Example.com", "jane.doe@example.com")
    assert Message.objects.filter(direction="INBOUND").count() == 3


def test_a_phone_number_is_matched_by_its_digits(api):
    first = post_as(api, "+1 (555) 010-0")
    second = post_as(api, "+15550100")
    third = post_as(api, "+1-555-010-0")

    assert first["contactId"] == second["contactId"] == third["contactId"]
    contact = Contact.objects.get()
    assert (contact.identifier, contact.identifier_key) == ("+1 (555) 010-0", "+15550100")


def test_a_phone_number_without_plus_is_not_a_phone_number(api):
    assert post_as(api, "+15550100")["contactId"] != post_as(api, "15550100")["contactId"]


@pytest.mark.parametrize(
    ("spelling", "same_spelling_trimmed", "other_case"),
    [("@handle", "  @handle ", "@HANDLE"), ("a@b@c", "a@b@c\n", "A@B@C")],
)
def test_an_identifier_with_an_unusual_at_is_trimmed_and_otherwise_exact(
    api, spelling, same_spelling_trimmed, other_case
):
    first = post_as(api, spelling)
    again = post_as(api, same_spelling_trimmed)
    other = post_as(api, other_case)

    assert again["contactId"] == first["contactId"]
    assert other["contactId"] != first["contactId"]
    assert sorted(Contact.objects.values_list("identifier", flat=True)) == sorted([spelling, other_case])


def test_another_workspace_with_the_same_address_is_another_contact(api, client):
    from channels_app.models import Workspace
    from tests.conftest import Api
    from tests.factories import ChannelFactory, api_key_for

    other_channel = ChannelFactory()
    Workspace.objects.filter(pk=other_channel.workspace_id).update(credit_balance=5)
    other = Api(client, other_channel, api_key_for(other_channel.workspace)[1])

    assert post_as(api, "Jane@Example.com")["contactId"] != post_as(other, "jane@example.com")["contactId"]
    assert Contact.objects.filter(identifier_key="jane@example.com").count() == 2


# --- contactName ------------------------------------------------------------------------------------------


def test_a_contact_without_a_name_takes_the_first_name_sent_and_keeps_it(api):
    without = {key: value for key, value in SEED_TEXT.items() if key != "contactName"}
    contact_id = api.post(without).json()["contactId"]
    assert Contact.objects.get(pk=contact_id).name == ""

    api.post({**without, "contactName": None})  # null is no name
    assert Contact.objects.get(pk=contact_id).name == ""
    api.post({**without, "contactName": "  Jane Doe "})
    assert Contact.objects.get(pk=contact_id).name == "Jane Doe"
    api.post({**without, "contactName": "Someone Else"})
    assert Contact.objects.get(pk=contact_id).name == "Jane Doe"
    assert Conversation.objects.count() == 1


def test_filling_the_name_costs_one_statement_and_only_when_needed(api, assert_statements):
    without = {key: value for key, value in SEED_TEXT.items() if key != "contactName"}
    api.post(without)  # a contact without a name; the key is warm
    # as the pinned hot path (tests/api/test_query_counts.py), no name sent: nothing more
    with assert_statements(EXISTING_CONTACT + api.extra):
        api.post({**without, "content": {"text": {"body": "second"}}})
    # a name sent to a contact without one: one UPDATE more
    with assert_statements(EXISTING_CONTACT + api.extra + 1) as queries:
        api.post({**without, "contactName": "Jane", "content": {"text": {"body": "third"}}})
    assert any(q["sql"].startswith('UPDATE "contacts_contact"') for q in queries.captured_queries)
    # a name sent to a contact that has one: nothing more
    with assert_statements(EXISTING_CONTACT + api.extra):
        api.post({**without, "contactName": "Other", "content": {"text": {"body": "fourth"}}})
