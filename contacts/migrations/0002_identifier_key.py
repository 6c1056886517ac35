"""Contacts are matched by a normalised key (contacts/identity.py), unique per workspace, instead of the
identifier as sent.

Stored contacts get their key here. Two stored contacts whose identifiers normalise to one key (e.g.
"Jane@Example.com" and "jane@example.com", created as two contacts before this rule) are not merged: the
one whose identifier already is the key keeps it, else the oldest; each other one keeps its own identifier
as its key. That identifier is not in normal form, so no request resolves to it any more (new messages go to
the key's owner), and it is unique, as identifiers were. Each such contact is logged by id (identifiers are
personal data).
"""

import logging

from django.db import migrations, models
from django.db.models import F

from contacts.identity import KEY_MAX_LENGTH, identifier_key

logger = logging.getLogger("contacts.migrations")


def keys_fill(apps, schema_editor):
    Contact = apps.get_model("contacts", "Contact")
    db = schema_editor.connection.alias
    # First every key is the identifier itself: unique, since identifiers were unique per workspace.
    Contact.objects.using(db).update(identifier_key=F("identifier"))
    rows = (
        Contact.objects.using(db)
        .order_by("created_at", "id")
        .values_list("id", "workspace_id", "identifier")
        .iterator(chunk_size=2000)
    )
    kept = 0
    for contact_id, workspace_id, identifier in rows:
        key = identifier_key(identifier)
        if key == identifier:
            continue  # already in normal form: it has its key
        owner = (
            Contact.objects.using(db)
            .filter(workspace_id=workspace_id, identifier_key=key)
            .values_list("id", flat=True)
            .first()
        )
        if owner is None:
            Contact.objects.using(db).filter(pk=contact_id).update(identifier_key=key)
        else:
            kept += 1
            logger.warning(
                "contact identifier collision: contact %s keeps its own identifier as its key; "
                "new messages under that identifier reach contact %s",
                contact_id,
                owner,
            )
    if kept:
        logger.warning("contact identifier collisions: %d contacts keep their own identifier as key", kept)
    # A row updated twice in this transaction leaves its (deferred) foreign key check pending, and
    # PostgreSQL refuses the ALTER TABLE below while checks are pending: run them now.
    schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


class Migration(migrations.Migration):

    dependencies = [
        ('contacts', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='contact',
            name='identifier_key',
            field=models.CharField(max_length=KEY_MAX_LENGTH, null=True),
        ),
        migrations.RunPython(keys_fill, migrations.RunPython.noop, elidable=False),
        migrations.AlterField(
            model_name='contact',
            name='identifier_key',
            field=models.CharField(help_text='The identifier as matched: trimmed, e-mail lower-cased, phone digits.', max_length=KEY_MAX_LENGTH),
        ),
        migrations.RemoveConstraint(
            model_name='contact',
            name='contact_unique_identifier',
        ),
        migrations.AddConstraint(
            model_name='contact',
            constraint=models.UniqueConstraint(fields=('workspace', 'identifier_key'), name='contact_unique_identifier_key'),
        ),
    ]
