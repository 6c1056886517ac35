"""The application's error tree. Each error carries the contract's `code`, an HTTP status and `details`.

It lives in `config` because every app raises these and imports point one way between the apps.
"""

from typing import Any


class ApplicationError(Exception):
    code = "internal_error"
    status_code = 500
    default_message = "The server could not process the request. Try again later."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        self.message = message or self.default_message
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(self.message)


class InvalidRequest(ApplicationError):
    code = "invalid_request"
    status_code = 400
    default_message = "The request is not valid. See details for the fields to fix."


class MissingApiKey(ApplicationError):
    code = "missing_api_key"
    status_code = 401
    default_message = "Send your workspace API key in the X-API-Key header."


class InvalidApiKey(ApplicationError):
    code = "invalid_api_key"
    status_code = 401
    default_message = "The API key is not valid. Check the X-API-Key header, or create a new key."


class InsufficientCredits(ApplicationError):
    code = "insufficient_credits"
    status_code = 402
    default_message = "The workspace has not enough credits for this message. Add credits and retry."


class ChannelNotFound(ApplicationError):
    code = "channel_not_found"
    status_code = 404
    default_message = "No channel with this id exists in your workspace. Check the channelId in the URL."


class ChannelUnavailable(ApplicationError):
    code = "channel_unavailable"
    status_code = 400
    default_message = "The channel is not an active API channel with an AI agent."


class IdempotencyInProgress(ApplicationError):
    code = "idempotency_in_progress"
    status_code = 409
    default_message = (
        "A request with this idempotency key is still being processed. Retry after the time given in Retry-After."
    )


class InvalidIdempotencyKey(ApplicationError):
    code = "invalid_idempotency_key"
    status_code = 400
    default_message = "The idempotency key must be 1 to 255 printable ASCII characters."


class IdempotencyKeyReused(ApplicationError):
    code = "idempotency_key_reused"
    status_code = 422
    default_message = "This idempotency key was already used for a different request. Use a new key for a new request."


class PayloadTooLarge(ApplicationError):
    code = "payload_too_large"
    status_code = 413
    default_message = "The request body is too large."


class RateLimited(ApplicationError):
    code = "rate_limited"
    status_code = 429
    default_message = "Too many requests for this API key. Retry after the time given in Retry-After."


class AgentUnavailable(ApplicationError):
    code = "agent_unavailable"
    status_code = 502
    default_message = "The AI agent could not answer. Your message was stored; retry with the same idempotency key."


class AgentTimeout(ApplicationError):
    code = "agent_timeout"
    status_code = 504
    default_message = (
        "The AI agent did not answer in time. Your message was stored; retry with the same idempotency key."
    )


class ConversationBusy(ApplicationError):
    code = "conversation_busy"
    status_code = 409
    default_message = (
        "An earlier message of this conversation is still being answered. Retry after the time given in Retry-After."
    )


class ServiceBusy(ApplicationError):
    code = "service_busy"
    status_code = 503
    default_message = (
        "The service is too busy to take this request now. Retry after the time given in "
        "Retry-After; with the same idempotency key a retry is safe."
    )


class InvalidHost(ApplicationError):
    code = "invalid_host"
    status_code = 400
    default_message = (
        "The Host header names a host this service does not answer to. Send the request to one of its host "
        "names (the operators list them in ALLOWED_HOSTS)."
    )
