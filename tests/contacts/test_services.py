"""contacts.services: creating a contact, and the (workspace, identifier) constraint that settles a race
between two first messages of one contact (the accept phase retries its transaction and finds the row)."""

import pytest
from django.db import IntegrityError, transaction

from contacts.models import Contact
from contacts.services import contact_create
from tests.factories import WorkspaceFactory


def test_contact_create_stores_the_contact_of_the_workspace(db):
    workspace = WorkspaceFactory.create()

    contact = contact_create(workspace_id=workspace.pk, identifier="user@example.com", name="User Name")

    stored = Contact.objects.get(pk=contact.pk)
    assert (stored.workspace_id, stored.identifier, stored.name) == (workspace.pk, "user@example.com", "User Name")
    assert stored.pk.startswith("ct_") and stored.created_at is not None
    assert str(stored) == "user@example.com (User Name)"  # operators find a contact by its identifier


def test_a_contact_without_a_name_is_shown_by_its_identifier(db):
    contact = contact_create(workspace_id=WorkspaceFactory.create().pk, identifier="+15550100", name="")

    assert str(contact) == "+15550100"


def test_the_same_identifier_twice_in_one_workspace_is_refused_by_the_database(db):
    # given
    workspace = WorkspaceFactory.create()
    first = contact_create(workspace_id=workspace.pk, identifier="user@example.com", name="First")

    # when: a second creator (a concurrent first message of the same contact) inserts it again
    with pytest.raises(IntegrityError), transaction.atomic():
        contact_create(workspace_id=workspace.pk, identifier="user@example.com", name="Second")

    # then: the first row stands, unchanged, and is the one a retry finds
    assert list(Contact.objects.filter(workspace=workspace).values_list("pk", "name")) == [(first.pk, "First")]


def test_the_same_identifier_in_two_workspaces_is_two_contacts(db):
    one, other = WorkspaceFactory.create(), WorkspaceFactory.create()

    mine = contact_create(workspace_id=one.pk, identifier="user@example.com", name="Mine")
    theirs = contact_create(workspace_id=other.pk, identifier="user@example.com", name="Theirs")

    assert mine.pk != theirs.pk
    assert Contact.objects.filter(identifier="user@example.com").count() == 2
    assert Contact.objects.get(workspace=one).name == "Mine"
