"""The daily rollup, which backoffice/0001 created before it moved to an app of its own (README "Layout": the
admin site reads it, the messages endpoint writes it, so it sits below both).

The table keeps its name, `backoffice_messageday` (Meta.db_table), so this one migration serves both kinds of
database:
- a fresh one: it creates the table (with its unique key, its index and its foreign keys);
- one migrated before the move: the table is there already, with its rows; it is left as it is, the model
  only enters analytics' migration state, and its content type moves to analytics so that admin log entries
  and permissions follow the model.
"""

import django.db.models.deletion
from django.db import migrations, models

TABLE = "backoffice_messageday"
MODEL = "messageday"


def table_create_unless_present(apps, schema_editor):
    if TABLE not in schema_editor.connection.introspection.table_names():
        schema_editor.create_model(apps.get_model("analytics", "MessageDay"))


def table_drop(apps, schema_editor):
    schema_editor.delete_model(apps.get_model("analytics", "MessageDay"))


def _content_type_move(apps, schema_editor, *, old: str, new: str) -> None:
    content_types = apps.get_model("contenttypes", "ContentType").objects.using(schema_editor.connection.alias)
    if not content_types.filter(app_label=new, model=MODEL).exists():
        content_types.filter(app_label=old, model=MODEL).update(app_label=new)


def content_type_to_analytics(apps, schema_editor):
    _content_type_move(apps, schema_editor, old="backoffice", new="analytics")


def content_type_to_backoffice(apps, schema_editor):
    _content_type_move(apps, schema_editor, old="analytics", new="backoffice")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('channels_app', '0003_agent_key_variable_and_history_help'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='MessageDay',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('day', models.DateField()),
                        ('error_code', models.CharField(blank=True, help_text='Empty for answered messages.', max_length=40)),
                        ('messages', models.PositiveIntegerField(default=0)),
                        ('replies', models.PositiveIntegerField(default=0, help_text='AI messages sent.')),
                        ('credits', models.BigIntegerField(default=0)),
                        ('input_tokens', models.BigIntegerField(default=0)),
                        ('output_tokens', models.BigIntegerField(default=0)),
                        ('agent_ms', models.BigIntegerField(default=0, help_text="Sum of the agent's latency, milliseconds.")),
                        ('lat_00', models.PositiveIntegerField(default=0)),
                        ('lat_01', models.PositiveIntegerField(default=0)),
                        ('lat_02', models.PositiveIntegerField(default=0)),
                        ('lat_03', models.PositiveIntegerField(default=0)),
                        ('lat_04', models.PositiveIntegerField(default=0)),
                        ('lat_05', models.PositiveIntegerField(default=0)),
                        ('lat_06', models.PositiveIntegerField(default=0)),
                        ('lat_07', models.PositiveIntegerField(default=0)),
                        ('lat_08', models.PositiveIntegerField(default=0)),
                        ('lat_09', models.PositiveIntegerField(default=0)),
                        ('lat_10', models.PositiveIntegerField(default=0)),
                        ('lat_11', models.PositiveIntegerField(default=0)),
                        ('lat_12', models.PositiveIntegerField(default=0)),
                        ('lat_13', models.PositiveIntegerField(default=0)),
                        ('lat_14', models.PositiveIntegerField(default=0)),
                        ('lat_15', models.PositiveIntegerField(default=0)),
                        ('lat_16', models.PositiveIntegerField(default=0)),
                        ('lat_17', models.PositiveIntegerField(default=0)),
                        ('lat_18', models.PositiveIntegerField(default=0)),
                        ('lat_19', models.PositiveIntegerField(default=0)),
                        ('channel', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='channels_app.channel')),
                        ('workspace', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='channels_app.workspace')),
                    ],
                    options={
                        'verbose_name': 'message day',
                        'db_table': 'backoffice_messageday',
                        'indexes': [models.Index(fields=['day'], name='message_day_day')],
                        'constraints': [models.UniqueConstraint(fields=('workspace', 'day', 'channel', 'error_code'), name='message_day_key')],
                    },
                ),
            ],
            database_operations=[],
        ),
        # After the state operation, so that `apps` knows the model; the table is created from that state.
        migrations.RunPython(table_create_unless_present, table_drop),
        migrations.RunPython(content_type_to_analytics, content_type_to_backoffice),
    ]
