"""The data migrations of the wire-format change, run on a database that holds data from before them:
contacts/0002 (normalised identifier keys, collisions kept apart) and conversations/0003 (OPEN -> ACTIVE).

Each test migrates the test database back to the migrations before, writes rows through the historical
models, migrates forward and checks; the database is left at the latest migrations again, whatever happens.
"""

import logging
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [
    ("contacts", "0001_initial"),
    ("conversations", "0002_media_asset"),
    ("channels_app", "0003_agent_key_variable_and_history_help"),
]
AFTER = [("contacts", "0002_identifier_key"), ("conversations", "0003_active_status_close_fields_metadata")]


@pytest.fixture
def migrate():
    """migrate(targets) -> the historical apps at those targets; the latest migrations are applied after."""

    def run(targets):
        executor = MigrationExecutor(connection)
        executor.migrate(targets)
        return executor.loader.project_state(targets).apps

    yield run
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def _workspace(apps, slug: str):
    return apps.get_model("channels_app", "Workspace").objects.create(name=slug, slug=slug)


def _contacts(apps, workspace, identifiers: list[str]) -> list:
    """Contacts created one second apart, in the given order."""
    Contact = apps.get_model("contacts", "Contact")
    start = timezone.now() - timedelta(days=1)
    made = []
    for index, identifier in enumerate(identifiers):
        contact = Contact.objects.create(workspace=workspace, identifier=identifier, name="")
        Contact.objects.filter(pk=contact.pk).update(created_at=start + timedelta(seconds=index))
        made.append(contact.pk)
    return made


def test_stored_contacts_get_their_keys_and_colliding_ones_are_kept_apart(migrate, caplog):
    # given: contacts stored before the rule, some of them spellings of one person
    old = migrate(BEFORE)
    workspace = _workspace(old, "one")
    other_workspace = _workspace(old, "two")
    upper, lower, phone_spaced, phone_dashed, handle, plain = _contacts(
        old,
        workspace,
        ["Jane@Example.com", "jane@example.com", "+1 (555) 010-0", "+1-555-010-0", "@Handle", "Bob@Example.com"],
    )
    (elsewhere,) = _contacts(old, other_workspace, ["JANE@example.com"])

    # when
    with caplog.at_level(logging.WARNING, logger="contacts.migrations"):
        new = migrate(AFTER)

    # then: every contact has a key, one per (workspace, key); identifiers are unchanged
    Contact = new.get_model("contacts", "Contact")
    keys = dict(Contact.objects.values_list("id", "identifier_key"))
    assert keys[lower] == "jane@example.com"  # already in normal form: it keeps the key
    assert keys[upper] == "Jane@Example.com"  # the other spelling keeps its own identifier, which no request reaches
    assert keys[phone_spaced] == "+15550100"  # no spelling in normal form: the oldest takes the key
    assert keys[phone_dashed] == "+1-555-010-0"
    assert keys[handle] == "@Handle"
    assert keys[plain] == "bob@example.com"
    assert keys[elsewhere] == "jane@example.com"  # another workspace: no collision
    assert Contact.objects.get(pk=upper).identifier == "Jane@Example.com"
    # and the collisions are logged by contact id, never by identifier (personal data)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert upper in logged and lower in logged and phone_dashed in logged and phone_spaced in logged
    assert "2 contacts" in logged
    for identifier in ("Jane@Example.com", "jane@example.com", "+1 (555) 010-0", "+1-555-010-0", "+15550100"):
        assert identifier not in logged
    # and the key is unique per workspace from now on
    with pytest.raises(IntegrityError), transaction.atomic():
        Contact.objects.create(
            workspace_id=workspace.pk, identifier="JANE@EXAMPLE.COM", identifier_key="jane@example.com"
        )


def test_open_conversations_become_active_and_the_one_active_rule_follows(migrate):
    # given: conversations stored with the old status word
    old = migrate(BEFORE)
    workspace = _workspace(old, "one")
    Channel = old.get_model("channels_app", "Channel")
    Conversation = old.get_model("conversations", "Conversation")
    channel = Channel.objects.create(workspace=workspace, name="API", type="API")
    first, second = _contacts(old, workspace, ["a@example.com", "b@example.com"])
    open_one = Conversation.objects.create(workspace=workspace, channel=channel, contact_id=first, status="OPEN")
    closed = Conversation.objects.create(workspace=workspace, channel=channel, contact_id=first, status="CLOSED")
    other_open = Conversation.objects.create(workspace=workspace, channel=channel, contact_id=second, status="OPEN")

    # when
    new = migrate(AFTER)

    # then
    Conversation = new.get_model("conversations", "Conversation")
    statuses = dict(Conversation.objects.values_list("id", "status"))
    assert statuses == {open_one.pk: "ACTIVE", closed.pk: "CLOSED", other_open.pk: "ACTIVE"}
    row = Conversation.objects.get(pk=open_one.pk)
    assert (row.closed_at, row.close_reason) == (None, "")
    # one active conversation per channel and contact, as there was one open one
    with pytest.raises(IntegrityError), transaction.atomic():
        Conversation.objects.create(workspace_id=workspace.pk, channel_id=channel.pk, contact_id=first, status="ACTIVE")
    Conversation.objects.create(workspace_id=workspace.pk, channel_id=channel.pk, contact_id=first, status="CLOSED")

    # and back: the reverse migration gives the rows their old word again
    old_again = migrate(BEFORE)
    OldConversation = old_again.get_model("conversations", "Conversation")
    assert OldConversation.objects.get(pk=open_one.pk).status == "OPEN"


def test_the_built_in_agents_entries_become_documents_it_answers_from(migrate):
    # given: an agent with question-and-answer entries, before the knowledge app (channels_app/0009)
    old = migrate([("channels_app", "0009_agent_actions_tools")])  # the knowledge app unapplied too
    workspace = _workspace(old, "entries")
    agent = old.get_model("channels_app", "AIAgent").objects.create(workspace=workspace, name="Ada")
    entries = old.get_model("channels_app", "KnowledgeEntry").objects
    refund = entries.create(agent=agent, question="Can I get a refund?", answer="Yes, within 30 days.")
    entries.create(agent=agent, question="Opening hours?", answer="From 9 to 18, order ORD-551 excepted.")

    # when
    new = migrate([("knowledge", "0002_knowledge_entries_become_documents")])

    # then: one READY document per entry, titled by its question, indexed, and the agent's counters match
    Document = new.get_model("knowledge", "Document")
    documents = {document.key: document for document in Document.objects.filter(agent_id=agent.pk)}
    assert len(documents) == 2
    assert (documents[refund.pk].title, documents[refund.pk].status) == ("Can I get a refund?", "READY")
    Passage = new.get_model("knowledge", "Passage")
    assert Passage.objects.get(document=documents[refund.pk]).text == "Yes, within 30 days."
    assert Passage.objects.filter(codes__contains=["ord-551"]).count() == 1
    counted = new.get_model("channels_app", "AIAgent").objects.get(pk=agent.pk)
    assert (counted.knowledge_documents, counted.knowledge_passages) == (2, 2)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('channels_app_knowledgeentry')")
        assert cursor.fetchone() == (None,)  # the entries' table is gone
