"""A message superseded by a newer one of its conversation, and the message that answers its burst whatever comes after (README "Bursts of short messages")."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0008_conversation_created_at_from_the_accept_phase'),
    ]

    operations = [
        migrations.AddField(
            model_name='message',
            name='burst_final',
            field=models.BooleanField(default=False),
        ),
        migrations.AlterField(
            model_name='message',
            name='status',
            field=models.CharField(choices=[('PENDING', 'Waiting for the agent'), ('ANSWERED', 'Answered'), ('FAILED', 'Agent failed'), ('SUPERSEDED', 'Superseded by a newer message'), ('SENT', 'Sent')], max_length=10),
        ),
    ]
