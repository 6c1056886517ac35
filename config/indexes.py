"""Migration operations for indexes that exist in the database before (or apart from) the model's state.

Adopting an index another app's migration built (`index_adopt_operation`): the index is declared on its own
model now, and a database that already holds it under its former name keeps it, renamed, not rebuilt.

Dropping a foreign key's own index in a migration without touching its constraint (`index_drop_operation`):

Django's AlterField(db_index=False) on PostgreSQL drops the foreign key's constraint and adds it back, which
validates every row of the table under a lock that blocks writes: minutes on a large messages table. A key
whose lookups a composite index already serves (it leads that index) needs only its indexes dropped: the
single-column one and its `varchar_pattern_ops` twin (`..._like`), found by their columns, whatever their
names. Use `index_drop_operation` in place of the AlterField: the migration state changes as AlterField's
would, the database loses only the indexes.
"""

from collections.abc import Callable
from typing import Any

from django.db import migrations
from django.db.migrations.operations.base import Operation


def _single_column_indexes(schema_editor: Any, table: str, column: str) -> list[str]:
    with schema_editor.connection.cursor() as cursor:
        constraints = schema_editor.connection.introspection.get_constraints(cursor, table)
    return [
        name
        for name, info in constraints.items()
        if info["index"] and not info["unique"] and not info["primary_key"] and info["columns"] == [column]
    ]


def _drop(app_label: str, model_name: str, field_name: str) -> Callable[[Any, Any], None]:
    def drop(apps: Any, schema_editor: Any) -> None:
        model = apps.get_model(app_label, model_name)
        column = model._meta.get_field(field_name).column
        for name in _single_column_indexes(schema_editor, model._meta.db_table, column):
            schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")

    return drop


def _create(app_label: str, model_name: str, field_name: str) -> Callable[[Any, Any], None]:
    def create(apps: Any, schema_editor: Any) -> None:
        model = apps.get_model(app_label, model_name)
        field = model._meta.get_field(field_name)
        if not _single_column_indexes(schema_editor, model._meta.db_table, field.column):
            schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))

    return create


def index_drop_operation(app_label: str, model_name: str, field_name: str, field: Any) -> Operation:
    """AlterField to `field` (the same foreign key with db_index=False) in the state; in the database only its
    single-column indexes dropped (recreated when migrating back)."""
    return migrations.SeparateDatabaseAndState(
        state_operations=[migrations.AlterField(model_name=model_name, name=field_name, field=field)],
        database_operations=[
            migrations.RunPython(_drop(app_label, model_name, field_name), _create(app_label, model_name, field_name))
        ],
    )


def _index_exists(schema_editor: Any, table: str, name: str) -> bool:
    with schema_editor.connection.cursor() as cursor:
        return name in schema_editor.connection.introspection.get_constraints(cursor, table)


def index_adopt_operation(app_label: str, model_name: str, index: Any, former_name: str) -> Operation:
    """AddIndex(`index`) in the state; in the database the index built under `former_name` (by an earlier
    migration of another app) renamed to `index.name`, or built when there is none. Migrating back renames
    it to `former_name` again, as the database was before."""

    def rename(schema_editor: Any, table: str, old: str, new: str) -> None:
        schema_editor.execute(f"ALTER INDEX {schema_editor.quote_name(old)} RENAME TO {schema_editor.quote_name(new)}")

    def forward(apps: Any, schema_editor: Any) -> None:
        model = apps.get_model(app_label, model_name)
        table = model._meta.db_table
        if _index_exists(schema_editor, table, former_name):
            rename(schema_editor, table, former_name, index.name)
        elif not _index_exists(schema_editor, table, index.name):
            schema_editor.add_index(model, index)

    def backward(apps: Any, schema_editor: Any) -> None:
        table = apps.get_model(app_label, model_name)._meta.db_table
        rename(schema_editor, table, index.name, former_name)

    return migrations.SeparateDatabaseAndState(
        state_operations=[migrations.AddIndex(model_name=model_name, index=index)],
        database_operations=[migrations.RunPython(forward, backward, elidable=False)],
    )
