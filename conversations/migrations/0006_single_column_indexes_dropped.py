# Each foreign key's own index is dropped, its constraint kept (config/indexes.py): a composite index leads
# with the key and serves its lookups, and each index is one more write per message.

import django.db.models.deletion
from django.db import migrations, models

from config.indexes import index_drop_operation


class Migration(migrations.Migration):

    dependencies = [
        ('channels_app', '0006_channel_inactivity_timeout'),
        ('contacts', '0004_single_column_indexes_dropped'),
        ('conversations', '0005_conversation_close_permission_and_idle_index'),
    ]

    operations = [
        index_drop_operation(
            'conversations', 'conversation', 'channel',
            models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='conversations', to='channels_app.channel'),
        ),
        index_drop_operation(
            'conversations', 'conversation', 'contact',
            models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='conversations', to='contacts.contact'),
        ),
        index_drop_operation(
            'conversations', 'conversation', 'workspace',
            models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='conversations', to='channels_app.workspace'),
        ),
        index_drop_operation(
            'conversations', 'message', 'conversation',
            models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='messages', to='conversations.conversation'),
        ),
    ]
