"""Migrations: the models match them, and a database migrated before the ledger and the idempotency records
moved out of channels_app (to billing and api) migrates forward with its rows."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from api.models import IdempotencyRecord
from billing.credits import credits_grant
from billing.models import UsageLedgerEntry
from tests.factories import WorkspaceFactory

MOVED = [("billing", "usageledgerentry"), ("api", "idempotencyrecord")]


def test_the_models_need_no_new_migration(db):
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # exits non-zero on a change


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
    recorder = MigrationRecorder(connection)
    applied = list(recorder.migration_qs.filter(app__in=["billing", "api"]).values_list("app", "name"))
    assert ("billing", "0001_initial") in applied and ("api", "0001_initial") in applied
    recorder.migration_qs.filter(app__in=["billing", "api"]).delete()
    for app_label, model in MOVED:
        ContentType.objects.filter(app_label=app_label, model=model).update(app_label="channels_app")
    ContentType.objects.clear_cache()
    permissions = {model: Permission.objects.filter(content_type__model=model).count() for _, model in MOVED}
    try:
        # when the new code migrates it
        call_command("migrate", verbosity=0)
    finally:
        for app, name in applied:  # whatever happened, leave the test database as it was
            recorder.record_applied(app, name)
        ContentType.objects.clear_cache()

    # then the rows are all there, the migrations are recorded, and the content types (with the same
    # permissions) are the new apps'
    assert UsageLedgerEntry.objects.get(pk=entry.pk).note == "before the move"
    assert IdempotencyRecord.objects.get(pk=record.pk).key == "k-1"
    assert set(applied) <= set(recorder.migration_qs.values_list("app", "name"))
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
