"""Once the trigram indexes of the admin's searches and the failed messages' index, built here for other apps'
tables. They are declared on their own models now (contacts.Contact, conversations.Message), whose
migrations build them, or adopt them under their new names where this migration built them before
(contacts/migrations/0005_search_indexes.py, conversations/migrations/0007_search_indexes.py). Kept, empty, for
the migrations that depend on it.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("backoffice", "0001_message_day"),
        ("contacts", "0001_initial"),
        ("conversations", "0002_media_asset"),
    ]

    operations = []
