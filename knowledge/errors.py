"""The knowledge API's errors (README "The agent's knowledge", and the error table)."""

from config.errors import ApplicationError


class AgentNotFound(ApplicationError):
    code = "agent_not_found"
    status_code = 404
    default_message = "No AI agent with this id exists in your workspace. Check the agentId in the URL."


class DocumentNotFound(ApplicationError):
    code = "document_not_found"
    status_code = 404
    default_message = "The agent has no document with this id. Check the documentId in the URL."


class DocumentTooLarge(ApplicationError):
    code = "document_too_large"
    status_code = 413
    default_message = "The document is too large. Split it into several documents."


class KnowledgeFull(ApplicationError):
    code = "knowledge_full"
    status_code = 422
    default_message = "The agent has as many passages as it may hold. Delete documents it no longer needs."


class IndexingTimeout(ApplicationError):
    code = "indexing_timeout"
    status_code = 422
    default_message = "Indexing the document took too long. Split it into smaller documents."


class DocumentEmpty(ApplicationError):
    code = "document_empty"
    status_code = 422
    default_message = "The document has no text to index. Send its text, or a URL of a page or file with text."


class DocumentTypeUnsupported(ApplicationError):
    code = "document_type_unsupported"
    status_code = 422
    default_message = "The URL's file is not HTML, PDF, plain text or Markdown. Send the URL of one of those."
