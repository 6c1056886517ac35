# The trigram indexes of the admin's contact searches, declared on Contact (contacts/models.py). A database
# migrated before holds them under the names backoffice/migrations/0002_search_indexes.py gave them: they are
# renamed, not rebuilt (config/indexes.py, `index_adopt_operation`).

import django.contrib.postgres.indexes
import django.db.models.functions.comparison
import django.db.models.functions.text
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models

from config.indexes import index_adopt_operation


def _trigram(column: str, name: str) -> django.contrib.postgres.indexes.GinIndex:
    return django.contrib.postgres.indexes.GinIndex(
        django.contrib.postgres.indexes.OpClass(
            django.db.models.functions.text.Upper(
                django.db.models.functions.comparison.Cast(column, output_field=models.TextField())
            ),
            name="gin_trgm_ops",
        ),
        name=name,
    )


class _TrigramExtension(TrigramExtension):
    """pg_trgm, which the indexes' `gin_trgm_ops` needs; kept when migrating back: the schema before this
    migration had it too (backoffice/migrations/0002_search_indexes.py made it), and its indexes use it."""

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        pass


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0004_single_column_indexes_dropped"),
    ]

    operations = [
        _TrigramExtension(),
        index_adopt_operation(
            "contacts", "contact", _trigram("identifier", "contact_identifier_trgm"), "backoffice_contact_identifier_trgm"
        ),
        index_adopt_operation("contacts", "contact", _trigram("name", "contact_name_trgm"), "backoffice_contact_name_trgm"),
    ]
