"""Conversations close (README "Conversations"): the permission behind the admin's "Close" action, and a partial
index on the active conversations' last message time for the inactivity clean-up."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0004_read_api"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="conversation",
            options={
                "ordering": ["-last_message_at"],
                "permissions": [("close_conversation", "Can close conversations")],
            },
        ),
        migrations.AddIndex(
            model_name="conversation",
            index=models.Index(
                condition=models.Q(("status", "ACTIVE")), fields=["last_message_at"], name="conversation_active_idle"
            ),
        ),
    ]
