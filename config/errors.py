"""The root of the application's error tree. Each error carries the contract's `code`, an HTTP status and
`details`; config.exception_handler renders every one as the contract's error body.

Here are the base class and the errors the handler itself produces from framework exceptions (bad JSON, a
body too large, an unknown URL or method, a throttled request, an exhausted database pool). Every other
error class lives beside the code that raises it (e.g. channels_app.authentication, billing.credits,
api.flow.idempotency, conversations.agents.errors, conversations.media.errors), a subclass of ApplicationError.
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


class NotFound(ApplicationError):
    code = "not_found"
    status_code = 404
    default_message = "No such resource. Check the URL."


class MethodNotAllowed(ApplicationError):
    code = "method_not_allowed"
    status_code = 405
    default_message = "The URL does not take this method; its Allow header lists the methods it takes."


class PermissionDenied(ApplicationError):
    code = "permission_denied"
    status_code = 403
    default_message = "You may not do this."


class PayloadTooLarge(ApplicationError):
    code = "payload_too_large"
    status_code = 413
    default_message = "The request body is too large."


class RateLimited(ApplicationError):
    code = "rate_limited"
    status_code = 429
    default_message = "Too many requests for this API key. Retry after the time given in Retry-After."


class ServiceBusy(ApplicationError):
    code = "service_busy"
    status_code = 503
    default_message = (
        "The service is too busy to take this request now. Retry after the time given in "
        "Retry-After; with the same idempotency key a retry is safe."
    )


class DatabaseUnavailable(ApplicationError):
    code = "database_unavailable"
    status_code = 503
    default_message = (
        "The database did not answer this request (it may be restarting). Retry after the time given in "
        "Retry-After; with the same idempotency key a retry is safe."
    )


class InvalidHost(ApplicationError):
    code = "invalid_host"
    status_code = 400
    default_message = (
        "The Host header names a host this service does not answer to. Send the request to one of its host "
        "names (the operators list them in ALLOWED_HOSTS)."
    )
