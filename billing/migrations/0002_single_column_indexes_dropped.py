# Each foreign key's own index is dropped, its constraint kept (config/indexes.py): a composite index leads
# with the key and serves its lookups, and each index is one more write per message.

import django.db.models.deletion
from django.db import migrations, models

from config.indexes import index_drop_operation


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0001_initial'),
        ('channels_app', '0006_channel_inactivity_timeout'),
    ]

    operations = [
        index_drop_operation(
            'billing', 'usageledgerentry', 'workspace',
            models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='ledger', to='channels_app.workspace'),
        ),
    ]
