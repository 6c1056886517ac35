# The admin's message search (a trigram index of the text) and its list of failed messages, declared on
# Message (conversations/models.py). A database migrated before holds them under the names
# backoffice/migrations/0002_search_indexes.py gave them: they are renamed, not rebuilt (config/indexes.py,
# `index_adopt_operation`). pg_trgm comes with contacts/migrations/0005_search_indexes.py.

import django.contrib.postgres.indexes
import django.db.models.fields.json
import django.db.models.functions.comparison
import django.db.models.functions.text
from django.db import migrations, models

from config.indexes import index_adopt_operation


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0005_search_indexes"),
        ("conversations", "0006_single_column_indexes_dropped"),
    ]

    operations = [
        index_adopt_operation(
            "conversations",
            "message",
            django.contrib.postgres.indexes.GinIndex(
                django.contrib.postgres.indexes.OpClass(
                    django.db.models.functions.text.Upper(
                        django.db.models.functions.comparison.Cast(
                            django.db.models.fields.json.KT("content__text__body"), output_field=models.TextField()
                        )
                    ),
                    name="gin_trgm_ops",
                ),
                name="message_text_trgm",
            ),
            "backoffice_message_text_trgm",
        ),
        index_adopt_operation(
            "conversations",
            "message",
            models.Index(condition=models.Q(("status", "FAILED")), fields=["error_code", "id"], name="message_failed"),
            "backoffice_message_failed",
        ),
    ]
