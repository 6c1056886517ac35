"""The idempotency records, which channels_app's 0001/0002 created before the apps were re-cut (README
"Layout" says why they moved: a record points at the message it stored, so it sits above conversations).

The table keeps its name, `channels_app_idempotencyrecord` (Meta.db_table), so this one migration serves both
kinds of database:
- a fresh one: it creates the table (with its indexes, unique constraint and foreign keys);
- one migrated before the move: the table is there already, with its rows; it is left as it is, the model
  only enters api's migration state, and its content type moves to api so that admin log entries and
  permissions follow the model.
"""

import config.ids
import django.db.models.deletion
from django.db import migrations, models

TABLE = "channels_app_idempotencyrecord"
MODEL = "idempotencyrecord"


def table_create_unless_present(apps, schema_editor):
    if TABLE not in schema_editor.connection.introspection.table_names():
        schema_editor.create_model(apps.get_model("api", "IdempotencyRecord"))


def table_drop(apps, schema_editor):
    schema_editor.delete_model(apps.get_model("api", "IdempotencyRecord"))


def _content_type_move(apps, schema_editor, *, old: str, new: str) -> None:
    content_types = apps.get_model("contenttypes", "ContentType").objects.using(schema_editor.connection.alias)
    if not content_types.filter(app_label=new, model=MODEL).exists():
        content_types.filter(app_label=old, model=MODEL).update(app_label=new)


def content_type_to_api(apps, schema_editor):
    _content_type_move(apps, schema_editor, old="channels_app", new="api")


def content_type_to_channels_app(apps, schema_editor):
    _content_type_move(apps, schema_editor, old="api", new="channels_app")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('channels_app', '0003_agent_key_variable_and_history_help'),
        ('contenttypes', '0002_remove_content_type_name'),
        ('conversations', '0002_media_asset'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='IdempotencyRecord',
                    fields=[
                        ('id', models.CharField(default=config.ids.idempotency_id, editable=False, max_length=40, primary_key=True, serialize=False)),
                        ('key', models.CharField(max_length=255)),
                        ('fingerprint', models.CharField(max_length=64)),
                        ('state', models.CharField(choices=[('IN_PROGRESS', 'In progress'), ('RELEASED', 'Released after a failure'), ('COMPLETED', 'Completed')], default='IN_PROGRESS', max_length=20)),
                        ('owner', models.CharField(blank=True, help_text='The attempt that holds the lock.', max_length=40)),
                        ('locked_until', models.DateTimeField(blank=True, null=True)),
                        ('expires_at', models.DateTimeField(db_index=True)),
                        ('response_status', models.PositiveSmallIntegerField(blank=True, null=True)),
                        ('response_body', models.BinaryField(blank=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('message', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='conversations.message')),
                        ('workspace', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='idempotency_records', to='channels_app.workspace')),
                    ],
                    options={
                        'db_table': 'channels_app_idempotencyrecord',
                        'ordering': ['-created_at'],
                        'constraints': [models.UniqueConstraint(fields=('workspace', 'key'), name='idempotency_unique_key')],
                    },
                ),
            ],
            database_operations=[],
        ),
        # After the state operation, so that `apps` knows the model; the table is created from that state.
        migrations.RunPython(table_create_unless_present, table_drop),
        migrations.RunPython(content_type_to_api, content_type_to_channels_app),
    ]
