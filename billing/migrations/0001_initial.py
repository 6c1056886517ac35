"""The usage ledger, which channels_app's 0001/0002 created before the apps were re-cut (README
"Layout" says why it moved: an entry points at a workspace and at a message, so it sits above both).

The table keeps its name, `channels_app_usageledgerentry` (Meta.db_table), so this one migration serves both
kinds of database:
- a fresh one: it creates the table (with its indexes and foreign keys);
- one migrated before the move: the table is there already, with its rows; it is left as it is, the model
  only enters billing's migration state, and its content type moves to billing so that admin log entries
  and permissions follow the model.
"""

import config.ids
import django.db.models.deletion
from django.db import migrations, models

TABLE = "channels_app_usageledgerentry"
MODEL = "usageledgerentry"


def table_create_unless_present(apps, schema_editor):
    if TABLE not in schema_editor.connection.introspection.table_names():
        schema_editor.create_model(apps.get_model("billing", "UsageLedgerEntry"))


def table_drop(apps, schema_editor):
    schema_editor.delete_model(apps.get_model("billing", "UsageLedgerEntry"))


def _content_type_move(apps, schema_editor, *, old: str, new: str) -> None:
    content_types = apps.get_model("contenttypes", "ContentType").objects.using(schema_editor.connection.alias)
    if not content_types.filter(app_label=new, model=MODEL).exists():
        content_types.filter(app_label=old, model=MODEL).update(app_label=new)


def content_type_to_billing(apps, schema_editor):
    _content_type_move(apps, schema_editor, old="channels_app", new="billing")


def content_type_to_channels_app(apps, schema_editor):
    _content_type_move(apps, schema_editor, old="billing", new="channels_app")


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
                    name='UsageLedgerEntry',
                    fields=[
                        ('id', models.CharField(default=config.ids.ledger_id, editable=False, max_length=40, primary_key=True, serialize=False)),
                        ('kind', models.CharField(choices=[('GRANT', 'Grant'), ('CHARGE', 'Charge'), ('ADJUSTMENT', 'Adjustment')], max_length=20)),
                        ('delta', models.BigIntegerField()),
                        ('balance_after', models.BigIntegerField()),
                        ('input_tokens', models.PositiveIntegerField(default=0)),
                        ('output_tokens', models.PositiveIntegerField(default=0)),
                        ('note', models.CharField(blank=True, max_length=200)),
                        ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                        ('message', models.ForeignKey(blank=True, help_text='The inbound message whose reply this charge paid for.', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='ledger_entries', to='conversations.message')),
                        ('workspace', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='ledger', to='channels_app.workspace')),
                    ],
                    options={
                        'verbose_name': 'usage ledger entry',
                        'verbose_name_plural': 'usage ledger',
                        'db_table': 'channels_app_usageledgerentry',
                        'ordering': ['-created_at'],
                        'indexes': [models.Index(fields=['workspace', '-created_at'], name='ledger_ws_created')],
                    },
                ),
            ],
            database_operations=[],
        ),
        # After the state operation, so that `apps` knows the model; the table is created from that state.
        migrations.RunPython(table_create_unless_present, table_drop),
        migrations.RunPython(content_type_to_billing, content_type_to_channels_app),
    ]
