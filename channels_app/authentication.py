"""`X-API-Key` authentication: the key is `prefix.secret`; the row is found by prefix, the secret checked
against its SHA-512 hash in constant time. The key itself is never logged."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication

from channels_app.models import WorkspaceApiKey
from config.db import connection_release
from config.errors import ApplicationError


class MissingApiKey(ApplicationError):
    code = "missing_api_key"
    status_code = 401
    default_message = "Send your workspace API key in the X-API-Key header."


class InvalidApiKey(ApplicationError):
    code = "invalid_api_key"
    status_code = 401
    default_message = "The API key is not valid. Check the X-API-Key header, or create a new key."


_INVALID = "The API key is not valid. Check the X-API-Key header, or create a key with `manage.py apikey create`."


def apikey_authenticate(*, raw_key: str) -> WorkspaceApiKey:
    """A key is printable ASCII (`prefix.secret`, both letters and digits); anything else is refused before
    it reaches a query: a NUL in the prefix would be a database error, a lone surrogate an encoding one."""
    prefix, dot, secret = raw_key.strip().partition(".")
    if not dot or not prefix or not secret or len(prefix) > 8 or not _printable_ascii(raw_key.strip()):
        raise InvalidApiKey(_INVALID, details={"header": "X-API-Key"})
    api_key = WorkspaceApiKey.objects.select_related("workspace").filter(prefix=prefix).first()
    if api_key is None or not api_key.is_valid(raw_key.strip()):
        raise InvalidApiKey(_INVALID, details={"header": "X-API-Key"})
    # Only a caller who holds the secret learns why a real key stopped working.
    if api_key.revoked:
        raise InvalidApiKey(
            "This API key was revoked. Use another key of the workspace.",
            details={"header": "X-API-Key", "reason": "revoked"},
        )
    if api_key.has_expired:
        raise InvalidApiKey(
            "This API key has expired (it was rotated). Use the workspace's new key.",
            details={"header": "X-API-Key", "reason": "expired"},
        )
    apikey_touch(api_key=api_key)
    return api_key


def _printable_ascii(value: str) -> bool:
    return value.isascii() and value.isprintable()


def apikey_touch(*, api_key: WorkspaceApiKey) -> None:
    """Keep `last_used_at` within a minute without a write on every request: one conditional UPDATE at
    most once per interval per key (concurrent requests race harmlessly on the condition)."""
    now = timezone.now()
    threshold = now - timedelta(seconds=settings.API_KEY_LAST_USED_INTERVAL_SECONDS)
    if api_key.last_used_at is None or api_key.last_used_at < threshold:
        WorkspaceApiKey.objects.filter(pk=api_key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=threshold)
        ).update(last_used_at=now)
        api_key.last_used_at = now


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        raw_key = request.META.get("HTTP_X_API_KEY", "")
        if not raw_key.strip():
            raise MissingApiKey("Send your workspace API key in the X-API-Key header.", details={"header": "X-API-Key"})
        api_key = apikey_authenticate(raw_key=raw_key)
        # The rate limiter (Redis) and the body's validation come next: no reason to hold a connection
        # through them. Under load a held connection is one another request waits for.
        connection_release()
        return (None, api_key)

    def authenticate_header(self, request):
        return "X-API-Key"
