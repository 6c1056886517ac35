# The function the messages endpoint's statements stop their transaction with (api/flow/writes.py, `_abort`).

from django.db import migrations

FUNCTION = "channels_hot_path_abort"


def create(apps, schema_editor):
    schema_editor.execute(
        f"CREATE OR REPLACE FUNCTION {FUNCTION}(reason text) RETURNS integer LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = reason; END $$"
    )


def drop(apps, schema_editor):
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}(text)")


class Migration(migrations.Migration):
    dependencies = [("api", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
