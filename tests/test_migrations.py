"""Migrations: the models match them, and a database migrated before a model moved to another app migrates
forward with its rows: the ledger and the idempotency records out of channels_app (to billing and api), the
daily rollup out of the back office (to analytics)."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from analytics.models import MessageDay
from analytics.stats import message_stats_answered
from api.models import IdempotencyRecord
from billing.credits import credits_grant
from billing.models import UsageLedgerEntry
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
