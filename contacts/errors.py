"""The contacts app's errors (subclasses of config.errors.ApplicationError)."""

from config.errors import ApplicationError


class ContactNotFound(ApplicationError):
    code = "contact_not_found"
    status_code = 404
    default_message = "No contact with this id in your workspace. Check the id (contactId of a message's answer)."
