# Each foreign key's own index is dropped, its constraint kept (config/indexes.py): a composite index leads
# with the key and serves its lookups, and each index is one more write per message.

import django.db.models.deletion
from django.db import migrations, models

from config.indexes import index_drop_operation


class Migration(migrations.Migration):

    dependencies = [
        ('channels_app', '0006_channel_inactivity_timeout'),
        ('contacts', '0003_read_api'),
    ]

    operations = [
        index_drop_operation(
            'contacts', 'contact', 'workspace',
            models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='contacts', to='channels_app.workspace'),
        ),
    ]
