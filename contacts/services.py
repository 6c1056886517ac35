import json
from datetime import datetime
from typing import Any

from django.db import connection

from contacts.attributes import ATTRIBUTES_MAX_KEYS
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
        identifier=placeholder, identifier_key=f" {placeholder}", name="", attributes={}, erased_at=now, updated_at=now
    )


class TooManyAttributes(Exception):
    """The merge would leave the contact with more than ATTRIBUTES_MAX_KEYS keys."""


def contact_attributes_merge_statement(*, contact_id: str, changes: dict[str, str | None]) -> tuple[str, list[Any]]:
    """The UPDATE that merges `changes` into the contact's attributes (a string sets a key, None removes it)
    and returns them, matching no row when the result would hold more than ATTRIBUTES_MAX_KEYS keys or the
    contact is erased. The merge is PostgreSQL's (`||` then `-`) on the row as it is when locked, so two
    concurrent merges both keep their keys; the caller adds its own conditions after its WHERE."""
    sets = json.dumps({key: value for key, value in changes.items() if value is not None}, ensure_ascii=False)
    removes = [key for key, value in changes.items() if value is None]
    merged = "((attributes || %s::jsonb) - %s::text[])"
    return (
        f"UPDATE {Contact._meta.db_table} SET attributes = {merged} "
        f"WHERE id = %s AND erased_at IS NULL AND (SELECT count(*) FROM jsonb_object_keys({merged})) <= %s",
        [sets, removes, contact_id, sets, removes, ATTRIBUTES_MAX_KEYS],
    )


def contact_attributes_merge(*, workspace_id: str, contact_id: str, changes: dict[str, str | None]) -> dict[str, str]:
    """Merge `changes` into the workspace's contact's attributes (PATCH /api/v1/contacts/{id}); returns them as
    merged. Raises Contact.DoesNotExist (unknown, another workspace's or erased) or TooManyAttributes."""
    sql, params = contact_attributes_merge_statement(contact_id=contact_id, changes=changes)
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} AND workspace_id = %s RETURNING attributes", [*params, workspace_id])
        row = cursor.fetchone()
    if row is None:
        if Contact.objects.filter(pk=contact_id, workspace_id=workspace_id, erased_at__isnull=True).exists():
            raise TooManyAttributes
        raise Contact.DoesNotExist
    return json.loads(row[0]) if isinstance(row[0], str) else row[0]
