"""A channel's burst mode and window (README "Bursts of short messages")."""

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('channels_app', '0007_aiagent_transcription_model'),
    ]

    operations = [
        migrations.AddField(
            model_name='channel',
            name='burst_mode',
            field=models.CharField(choices=[('queue', 'Queue: every message is answered, in order'), ('latest', 'Latest: a newer message supersedes the earlier unanswered ones')], default='queue', help_text='queue: every message is answered, in order. latest: a newer message of the conversation supersedes the earlier unanswered ones, and one answer is given for all of them.', max_length=10),
        ),
        migrations.AddField(
            model_name='channel',
            name='burst_window_ms',
            field=models.PositiveIntegerField(default=0, help_text="latest mode: milliseconds the agent waits after a message for a newer one before it starts (0-15000); each newer message restarts the wait, at most 15000 ms after the burst's first message.", validators=[django.core.validators.MaxValueValidator(15000)]),
        ),
        migrations.AddConstraint(
            model_name='channel',
            constraint=models.CheckConstraint(condition=models.Q(('burst_window_ms__lte', 15000)), name='channel_burst_window_max'),
        ),
    ]
