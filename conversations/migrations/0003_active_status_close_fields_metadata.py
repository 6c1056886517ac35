"""The conversation status word becomes ACTIVE (Blubash's, README "Example"); stored OPEN rows follow, and
so does the partial unique constraint "one active conversation per channel and contact". Conversations get
`closed_at` / `close_reason` (empty while active) and messages `metadata`."""

from django.db import migrations, models


def open_to_active(apps, schema_editor):
    Conversation = apps.get_model("conversations", "Conversation")
    Conversation.objects.using(schema_editor.connection.alias).filter(status="OPEN").update(status="ACTIVE")


def active_to_open(apps, schema_editor):
    Conversation = apps.get_model("conversations", "Conversation")
    Conversation.objects.using(schema_editor.connection.alias).filter(status="ACTIVE").update(status="OPEN")


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0002_media_asset'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='conversation',
            name='conversation_one_open_per_contact',
        ),
        migrations.AlterField(
            model_name='conversation',
            name='status',
            field=models.CharField(choices=[('ACTIVE', 'Active'), ('CLOSED', 'Closed')], default='ACTIVE', max_length=10),
        ),
        migrations.RunPython(open_to_active, active_to_open, elidable=False),
        migrations.AddConstraint(
            model_name='conversation',
            constraint=models.UniqueConstraint(condition=models.Q(('status', 'ACTIVE')), fields=('channel', 'contact'), name='conversation_one_active_per_contact'),
        ),
        migrations.AddField(
            model_name='conversation',
            name='closed_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='conversation',
            name='close_reason',
            field=models.CharField(blank=True, choices=[('inactivity', 'Inactivity'), ('api', 'Closed through the API'), ('operator', 'Closed by an operator'), ('agent', 'Closed by the agent')], max_length=20),
        ),
        migrations.AddField(
            model_name='message',
            name='metadata',
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
