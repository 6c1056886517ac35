from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models.functions import Cast, Upper

from config import ids
from contacts.identity import KEY_MAX_LENGTH


class Contact(models.Model):
    """A person who writes to a workspace, named by the integrator's `contactIdentifier`.

    `identifier` is kept as first sent (for display); `identifier_key` (contacts.identity) is what requests
    are matched by, unique per workspace, so two spellings of one address are one contact.
    """

    id = models.CharField(primary_key=True, max_length=40, default=ids.contact_id, editable=False)
    # Indexed by contact_unique_identifier_key and contact_ws_recent, which lead with it.
    workspace = models.ForeignKey(
        "channels_app.Workspace", on_delete=models.CASCADE, related_name="contacts", db_index=False
    )
    identifier = models.CharField(max_length=320)
    identifier_key = models.CharField(
        max_length=KEY_MAX_LENGTH, help_text="The identifier as matched: trimmed, e-mail lower-cased, phone digits."
    )
    name = models.CharField(max_length=200, blank=True)
    # A flat {key: string} object (contacts/attributes.py has its limits): set by the agent's
    # set_contact_attributes action and PATCH /api/v1/contacts/{id}; given to the agent with every message.
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Set by the erasure (api/maintenance/erasure.py): identifier and name are then a placeholder and "".
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # The read API's contact list, newest first by (created_at, id), keyset-paged (contacts/selectors.py).
        indexes = [
            models.Index(fields=["workspace", "-created_at", "-id"], name="contact_ws_recent"),
            # The admin's searches by identifier and name (conversations/search.py, backoffice/site.py): trigram
            # indexes of the expressions Django's `icontains` compares (`UPPER(col::text) LIKE UPPER('%term%')`).
            GinIndex(
                OpClass(Upper(Cast("identifier", models.TextField())), name="gin_trgm_ops"),
                name="contact_identifier_trgm",
            ),
            GinIndex(OpClass(Upper(Cast("name", models.TextField())), name="gin_trgm_ops"), name="contact_name_trgm"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "identifier_key"], name="contact_unique_identifier_key"),
        ]

    def __str__(self) -> str:
        # The identifier first, wherever the admin names a contact: it is what operators search by.
        return f"{self.identifier} ({self.name})" if self.name else self.identifier


def contact_name_or_null(name: str) -> str | None:
    """A contact's name as the API and the exports write it: null for none (stored as "", as Django keeps
    an empty text field)."""
    return name or None
