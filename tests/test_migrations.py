"""Migrations: the models match them, and a database migrated before a model moved to another app migrates
forward with its rows: the ledger and the idempotency records out of channels_app (to billing and api), the
daily rollup out of the back office (to analytics); and one migrated before the search indexes moved onto their
own models."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from analytics.models import MessageDay
from api.models import IdempotencyRecord
from billing.credits import credits_grant
from billing.models import UsageLedgerEntry
from contacts.models import Contact
from conversations.models import Message
from tests.backoffice.seed import message_stats_answered
from tests.factories import ChannelFactory, WorkspaceFactory

MOVED = [("billing", "usageledgerentry"), ("api", "idempotencyrecord")]


def test_the_models_need_no_new_migration(db):
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # exits non-zero on a change


def migrate_from_before_the_move(
    *, apps: list[str], moved: list[tuple[str, str]], old: str
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Make the test database look as the release before the move left it (the `apps`' migrations never
    applied, the `moved` models' content types `old`'s), migrate it with the new code, then record the
    migrations as applied again whatever happened. The migrations that were unapplied, and each moved model's
    permission count before."""
    recorder = MigrationRecorder(connection)
    applied = list(recorder.migration_qs.filter(app__in=apps).values_list("app", "name"))
    assert {(app, "0001_initial") for app in apps} <= set(applied)
    recorder.migration_qs.filter(app__in=apps).delete()
    for app_label, model in moved:
        ContentType.objects.filter(app_label=app_label, model=model).update(app_label=old)
    ContentType.objects.clear_cache()
    permissions = {model: Permission.objects.filter(content_type__model=model).count() for _, model in moved}
    try:
        call_command("migrate", verbosity=0)
    finally:
        for app, name in applied:  # whatever happened, leave the test database as it was
            recorder.record_applied(app, name)
        ContentType.objects.clear_cache()
    assert set(applied) <= set(recorder.migration_qs.values_list("app", "name"))
    return applied, permissions


@pytest.mark.django_db(transaction=True)
def test_a_database_migrated_before_the_move_keeps_its_rows():
    # given a database as the release before the move left it: the two tables (their names never changed)
    # hold rows, billing's and api's migrations were never applied, and the two models' content types, with
    # their permissions, are channels_app's
    workspace = WorkspaceFactory(credit_balance=0)
    entry = credits_grant(workspace=workspace, amount=7, note="before the move")
    record = IdempotencyRecord.objects.create(
        workspace=workspace, key="k-1", fingerprint="f" * 64, expires_at=timezone.now() + timedelta(days=1)
    )
    applied, permissions = migrate_from_before_the_move(apps=["billing", "api"], moved=MOVED, old="channels_app")

    # then the rows are all there, the migrations are recorded, and the content types (with the same
    # permissions) are the new apps'
    assert UsageLedgerEntry.objects.get(pk=entry.pk).note == "before the move"
    assert IdempotencyRecord.objects.get(pk=record.pk).key == "k-1"
    for app_label, model in MOVED:
        content_type = ContentType.objects.get(model=model)
        assert content_type.app_label == app_label
        assert Permission.objects.filter(content_type=content_type).count() == permissions[model] == 4
    # and the ledger still works through its new app's model
    credits_grant(workspace=workspace, amount=1)
    assert [e.balance_after for e in UsageLedgerEntry.objects.filter(workspace=workspace).order_by("created_at")] == [
        7,
        8,
    ]


@pytest.mark.django_db(transaction=True)
def test_a_database_migrated_before_the_rollup_left_the_back_office_keeps_its_rows():
    # given a database as today's release leaves it: the rollup's table (its name never changed) holds a day,
    # analytics' migration was never applied, and the model's content type, with its permissions, is the
    # back office's
    channel = ChannelFactory()
    day = date(2026, 11, 30)
    row = MessageDay.objects.create(day=day, workspace=channel.workspace, channel=channel, messages=3, credits=9)

    # when the new code migrates it
    _, permissions = migrate_from_before_the_move(
        apps=["analytics"], moved=[("analytics", "messageday")], old="backoffice"
    )

    # then the row is there, the content type (with the same permissions) is analytics', and the upsert adds
    # to the row it finds (its unique key came through)
    assert MessageDay.objects.get(pk=row.pk).messages == 3
    content_type = ContentType.objects.get(model="messageday")
    assert content_type.app_label == "analytics"
    assert Permission.objects.filter(content_type=content_type).count() == permissions["messageday"] == 4
    message_stats_answered(
        workspace_id=channel.workspace_id,
        channel_id=channel.pk,
        at=datetime(2026, 11, 30, 12, tzinfo=UTC),
        replies=1,
        credits=2,
        input_tokens=0,
        output_tokens=0,
        agent_seconds=0.1,
    )
    assert MessageDay.objects.values_list("messages", "credits").get(pk=row.pk) == (4, 11)


# The search indexes as the release before built them for other apps' tables (its
# backoffice/migrations/0002_search_indexes.py), by their names now, which the models declare.
FORMER_INDEXES = {
    "message_text_trgm": (
        "backoffice_message_text_trgm",
        "conversations_message USING gin (UPPER((content #>> '{text,body}'::text[])::text) gin_trgm_ops)",
    ),
    "message_failed": (
        "backoffice_message_failed",
        "conversations_message USING btree (error_code, id) WHERE status = 'FAILED'",
    ),
    "contact_identifier_trgm": (
        "backoffice_contact_identifier_trgm",
        "contacts_contact USING gin (UPPER(identifier::text) gin_trgm_ops)",
    ),
    "contact_name_trgm": (
        "backoffice_contact_name_trgm",
        "contacts_contact USING gin (UPPER(name::text) gin_trgm_ops)",
    ),
}


def index_definitions(names) -> dict[str, str]:
    """The indexes of those names as PostgreSQL describes them, each with its own name taken out."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY(%s)", [list(names)])
        return {name: definition.replace(f" {name} ", " <name> ") for name, definition in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_a_database_migrated_by_the_release_before_keeps_its_rows_and_its_search_indexes():
    # the indexes as this release builds them on a fresh database, declared on their own models
    declared = {index.name for model in (Message, Contact) for index in model._meta.indexes}
    assert set(FORMER_INDEXES) <= declared
    built = index_definitions(FORMER_INDEXES)
    assert set(built) == set(FORMER_INDEXES)
    try:
        # given: the database as the release before left it: its last migrations of the two apps, the indexes
        # built (under their former names) by the SQL of backoffice's migration, and rows in the tables
        call_command("migrate", "contacts", "0004_single_column_indexes_dropped", verbosity=0)
        with connection.cursor() as cursor:
            for name, (former, definition) in FORMER_INDEXES.items():
                cursor.execute(f"DROP INDEX IF EXISTS {former}")
                cursor.execute(f"DROP INDEX IF EXISTS {name}")
                cursor.execute(f"CREATE INDEX {former} ON {definition}")
        before = index_definitions(former for former, _ in FORMER_INDEXES.values())
        assert len(before) == len(FORMER_INDEXES)
        # the rows written by that release's models (its tables lack the columns later migrations add)
        old = MigrationExecutor(connection).loader.project_state(
            [
                ("contacts", "0004_single_column_indexes_dropped"),
                ("conversations", "0006_single_column_indexes_dropped"),
            ]
        )
        channel = ChannelFactory()
        contact = old.apps.get_model("contacts", "Contact").objects.create(
            workspace_id=channel.workspace_id, identifier="dana@example.com", name="Dana"
        )
        conversation = old.apps.get_model("conversations", "Conversation").objects.create(
            workspace_id=channel.workspace_id, channel_id=channel.pk, contact_id=contact.pk, agent_id=channel.agent_id
        )
        message = old.apps.get_model("conversations", "Message").objects.create(
            conversation_id=conversation.pk, seq=1, direction="INBOUND", type="TEXT", content={"text": {"body": "hi"}}
        )

        # when this release migrates it
        call_command("migrate", verbosity=0)
    finally:
        call_command("migrate", verbosity=0)  # whatever happened, leave the test database migrated

    # then the rows are there, and each index is kept (not rebuilt) under its new name, as this release builds it
    assert Message.objects.get(pk=message.pk).content == {"text": {"body": "hi"}}
    assert Contact.objects.get(pk=contact.pk).name == "Dana"
    after = index_definitions([*FORMER_INDEXES, *(former for former, _ in FORMER_INDEXES.values())])
    assert set(after) == set(FORMER_INDEXES)
    for name, (former, _) in FORMER_INDEXES.items():
        assert after[name] == before[former] == built[name], name
    # and the search finds the row through its index
    assert list(Message.objects.filter(content__text__body__icontains="hi").values_list("pk", flat=True)) == [
        message.pk
    ]
