"""Trigram indexes for the admin's searches (PostgreSQL only): a message's text and a contact's identifier and
name, each under UPPER() exactly as Django writes `icontains` (`UPPER(expr::text) LIKE UPPER('%term%')`), so a
substring search is an index scan, not a scan of the table. They live here, not in their apps' models,
because Django cannot declare them there without breaking SQLite (GIN is PostgreSQL's); SQLite searches
with a plain LIKE, which is fine for a development database. backoffice/search.py builds the matching
lookups.

Built CONCURRENTLY (hence atomic = False): on a live database the tables keep taking writes meanwhile.
"""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations

INDEXES = {
    "backoffice_message_text_trgm": (
        "conversations_message",
        "UPPER((content #>> '{text,body}'::text[])::text) gin_trgm_ops",
    ),
    "backoffice_contact_identifier_trgm": ("contacts_contact", "UPPER(identifier::text) gin_trgm_ops"),
    "backoffice_contact_name_trgm": ("contacts_contact", "UPPER(name::text) gin_trgm_ops"),
}
# The message list filtered by what failed, newest first: failed messages are few, so the index is small.
PARTIAL_INDEXES = {
    "backoffice_message_failed": ("conversations_message", "btree", "error_code, id", "status = 'FAILED'"),
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, (table, expression) in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} USING gin ({expression})")
    for name, (table, method, columns, condition) in PARTIAL_INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} USING {method} ({columns}) WHERE {condition}"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in [*INDEXES, *PARTIAL_INDEXES]:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("backoffice", "0001_message_day"),
        ("contacts", "0001_initial"),
        ("conversations", "0002_media_asset"),
    ]

    operations = [
        TrigramExtension(),
        migrations.RunPython(create, drop, elidable=False),
    ]
