"""The conversations app's errors for lookups by id (subclasses of config.errors.ApplicationError)."""

from config.errors import ApplicationError


class ConversationNotFound(ApplicationError):
    code = "conversation_not_found"
    status_code = 404
    default_message = (
        "No conversation with this id in your workspace. Check the id (conversationId of a message's answer)."
    )


class MessageNotFound(ApplicationError):
    code = "message_not_found"
    status_code = 404
    default_message = "No message with this id in your workspace. Check the id (messageId of a message's answer)."
