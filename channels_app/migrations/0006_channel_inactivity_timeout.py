"""Each channel's inactivity timeout (README "Conversations"): a day unless set; 0 never closes."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("channels_app", "0005_team"),
    ]

    operations = [
        migrations.AddField(
            model_name="channel",
            name="inactivity_timeout_seconds",
            field=models.PositiveIntegerField(
                default=86400,
                help_text="An active conversation whose last message is older than this is closed (reason inactivity); the contact's next message opens a new one. 0: never.",
            ),
        ),
    ]
