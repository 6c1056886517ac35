"""One exception handler: DRF, Django and application errors become the contract's error body.

`{"success": false, "error": {"code": "...", "message": "...", "details": {...}}}`
"""

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, HttpResponse
from gunicorn.http.errors import ParseException
from psycopg_pool import PoolTimeout
from rest_framework import exceptions

from config.errors import (
    ApplicationError,
    DatabaseUnavailable,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServiceBusy,
)
from config.logs import exception_summary, log_bind

logger = logging.getLogger(__name__)


def error_body(*, code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    """UTF-8 JSON. Details may repeat what the client sent (an unknown field's name); should that be text
    UTF-8 cannot encode (a lone surrogate), the body is written all-ASCII with escapes instead of failing."""
    value = {"success": False, "error": {"code": code, "message": message, "details": details or {}}}
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


def error_response(error: ApplicationError) -> HttpResponse:
    response = HttpResponse(
        error_body(code=error.code, message=error.message, details=error.details),
        status=error.status_code,
        content_type="application/json",
    )
    for name, value in error.headers.items():
        response[name] = value
    return response


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, str]:
    """{"content": {"text": {"body": ["..."]}}} -> {"content.text.body": "..."}: one sentence per field."""
    if isinstance(detail, dict):
        flat: dict[str, str] = {}
        for key, value in detail.items():
            name = prefix if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
            flat.update(flatten_errors(value, name))
        return flat
    if isinstance(detail, list):
        if detail and all(not isinstance(item, (dict, list)) for item in detail):
            return {prefix or "body": " ".join(str(item) for item in detail)}
        flat = {}
        for index, item in enumerate(detail):
            flat.update(flatten_errors(item, f"{prefix}[{index}]"))
        return flat
    return {prefix or "body": str(detail)}


def to_application_error(exc: Exception) -> ApplicationError | None:
    if isinstance(exc, ApplicationError):
        return exc
    if isinstance(exc, PoolTimeout) or isinstance(exc.__cause__, PoolTimeout):  # Django wraps driver errors
        # Every database connection of this process stayed busy for DB_POOL_TIMEOUT: overload, not a bug.
        return ServiceBusy(details={"reason": "database_pool_exhausted"}, headers={"Retry-After": "2"})
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The connection broke or the server refused the statement (a restart, a terminated backend, a
        # failover; a deadlock or a cancelled statement too): nothing about the request was wrong, and a
        # retry on a fresh connection works (pooled connections are checked before use, config/postgresql/).
        return DatabaseUnavailable(headers={"Retry-After": "2"})
    if isinstance(exc, exceptions.ValidationError):
        details = flatten_errors(exc.detail)
        fields = ", ".join(sorted(details))
        return InvalidRequest(
            f"The request has invalid fields: {fields}. See details for what to send.", details=details
        )
    if isinstance(exc, exceptions.ParseError):
        return InvalidRequest("The body is not valid JSON. Send a JSON object.", details={"body": str(exc.detail)})
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return InvalidRequest(
            "Send the body as JSON with the header Content-Type: application/json.",
            details={"Content-Type": str(exc.detail)},
        )
    if isinstance(exc, ParseException):
        # gunicorn decodes a chunked body while the view reads it: a malformed one is the client's error.
        return InvalidRequest(
            "The request body's chunked encoding is malformed. Send the body with a Content-Length, or as "
            "well-formed chunks.",
            details={"body": "malformed chunked encoding"},
        )
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge()
    if isinstance(exc, exceptions.Throttled):
        wait = max(1, int(exc.wait or 1))
        return RateLimited(
            f"Too many requests for this API key. Retry in {wait} seconds.",
            details={"retryAfterSeconds": wait},
            headers={"Retry-After": str(wait)},
        )
    if isinstance(exc, (Http404, exceptions.NotFound)):
        return NotFound()
    if isinstance(exc, exceptions.MethodNotAllowed):
        return MethodNotAllowed(str(exc.detail))  # exception_handler says which methods the URL takes
    if isinstance(exc, (DjangoPermissionDenied, exceptions.PermissionDenied)):
        return PermissionDenied()
    if isinstance(exc, exceptions.APIException):
        error = ApplicationError(str(exc.detail))
        error.code, error.status_code = exc.default_code, exc.status_code
        return error
    return None


def method_not_allowed(*, method: str, allowed: list[str]) -> MethodNotAllowed:
    """405 for `method` on a URL that takes the methods `allowed` (its `Allow` header, less HEAD and
    OPTIONS, which every URL takes): the body says which to use. The OpenAPI document's 405s too."""
    usable = [name for name in allowed if name not in ("HEAD", "OPTIONS")]
    return MethodNotAllowed(
        f"This URL does not take {method}. Use {' or '.join(usable)}.", details={"method": method, "allowed": usable}
    )


def require_safe(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Django's `require_safe` for a plain view (the probes, the favicon), whose refusal of another method is
    the error body (405 method_not_allowed) rather than an empty HTML page."""

    @functools.wraps(view)
    def safe_only(request, *args, **kwargs) -> HttpResponse:
        if request.method in ("GET", "HEAD"):
            return view(request, *args, **kwargs)
        response = error_response(method_not_allowed(method=request.method, allowed=["GET", "HEAD"]))
        response["Allow"] = "GET, HEAD"
        return response

    return safe_only


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse:
    error = to_application_error(exc)
    if isinstance(exc, exceptions.MethodNotAllowed) and "view" in context:
        error = method_not_allowed(method=context["request"].method, allowed=list(context["view"].allowed_methods))
    view = context.get("view").__class__.__name__
    if error is None:
        logger.exception("unhandled error in %s", view)
        error = ApplicationError()
    elif isinstance(error, DatabaseUnavailable):
        # Not a bug, but an operator wants to know: the class and SQLSTATE only (config/logs.py: never the text).
        logger.warning("database unavailable in %s: %s", view, exception_summary(exc))
    log_bind(error_code=error.code)
    return error_response(error)


# Django's own error views (config/urls.py handler404/handler500), for requests that never reach a DRF view:
# an unknown URL, or a failure in a middleware. Same body as every other error.


def not_found_view(request, exception=None) -> HttpResponse:
    error = ApplicationError(
        "No such resource. Check the URL: the messages endpoint is POST /api/v1/channels/{channelId}/messages."
    )
    error.code, error.status_code = "not_found", 404
    return error_response(error)


def server_error_view(request) -> HttpResponse:
    """Django calls this while it handles the exception, so the exception is still at hand: a database
    outage outside a DRF view (a middleware's query) is a 503 there too."""
    exc = sys.exc_info()[1]
    error = to_application_error(exc) if isinstance(exc, Exception) else None
    return error_response(error or ApplicationError())


class NulInputMiddleware:
    """A U+0000 from a URL, a query string or a form that reaches PostgreSQL outside the API (an admin object
    id `%00`, a list filter, an autocomplete term, a choice in a form) is the client's mistake: 400, not a 500.
    psycopg refuses the NUL while adapting the parameters, so the query was never sent. The messages API
    checks its own inputs at the edge (api/edge/views.py, channels_app selectors, authentication) and DRF answers its
    errors before they get here, so a NUL from anywhere else (an agent's reply) stays the bug it is."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, DataError) and "NUL (0x00)" in str(exception):
            return error_response(
                InvalidRequest(
                    "The request contains a NUL character (U+0000, `%00` in a URL), which no field can hold. "
                    "Remove it.",
                    details={"request": "contains U+0000 (NUL)"},
                )
            )
        return None
