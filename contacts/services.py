from contacts.models import Contact


def contact_create(*, workspace_id: str, identifier: str, name: str) -> Contact:
    """Insert a new contact. A concurrent creator of the same (workspace, identifier) makes this raise
    IntegrityError through the unique constraint; the caller retries its transaction and then finds the row."""
    return Contact.objects.create(workspace_id=workspace_id, identifier=identifier, name=name)
