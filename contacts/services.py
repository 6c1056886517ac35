from datetime import datetime

from contacts.identity import identifier_key
from contacts.models import Contact


def contact_build(*, workspace_id: str, identifier: str, name: str) -> Contact:
    """A new contact, keyed by its normalised identifier (contacts.identity), not saved yet. A concurrent
    creator of the same (workspace, key), under any spelling, makes its insert raise IntegrityError through the
    unique constraint; the caller retries its transaction and then finds the row."""
    return Contact(
        workspace_id=workspace_id, identifier=identifier, identifier_key=identifier_key(identifier), name=name
    )


def contact_create(*, workspace_id: str, identifier: str, name: str) -> Contact:
    """Insert a new contact (`contact_build`)."""
    contact = contact_build(workspace_id=workspace_id, identifier=identifier, name=name)
    contact.save(force_insert=True)
    return contact


def contact_name_fill(*, contact_id: str, name: str, now: datetime) -> None:
    """Give a contact that has no name the one just sent: one UPDATE, conditional on the name still being
    empty, so of two concurrent first names the first to commit stays."""
    Contact.objects.filter(pk=contact_id, name="").update(name=name, updated_at=now)


def erased_identifier(contact_id: str) -> str:
    """What an erased contact's identifier becomes: unique and not personal. Its key (`contact_erase_identity`)
    starts with a space, which `identifier_key` never yields (it trims), so no request can reach an erased
    contact and the erased identifier, sent again, makes a new contact."""
    return f"erased:{contact_id}"


def contact_erase_identity(*, contact_id: str, now: datetime) -> None:
    """Replace the contact's identifier and name by a placeholder (README "Erasing a contact"). One UPDATE;
    the contact row, its id and its conversations' ids stay."""
    placeholder = erased_identifier(contact_id)
    Contact.objects.filter(pk=contact_id).update(
        identifier=placeholder, identifier_key=f" {placeholder}", name="", erased_at=now, updated_at=now
    )
