"""`X-API-Key` authentication: the key is `prefix.secret`; the row is found by prefix, the secret checked
against its SHA-512 hash in constant time. The key itself is never logged."""

from datetime import timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Model, Q
from django.db.models.expressions import Col
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication

from channels_app.models import Workspace, WorkspaceApiKey
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
    api_key = _key_with_workspace(prefix)
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


def _key_with_workspace(prefix: str) -> WorkspaceApiKey | None:
    """`WorkspaceApiKey.objects.select_related("workspace").filter(prefix=prefix).first()`, the same row and
    the same instances, without the ORM's compilation of that query on every request: its SQL is built once
    from the models' fields (`_key_lookup`). The ORM's compilation was about 0.5 ms of CPU, more than half of
    the authentication's cost and a few percent of a message's (bench/RESULTS.md, "CPU per message");
    `prefix` is unique, so the ORM's ORDER BY for `first()` chose nothing."""
    sql, key_fields, workspace_fields = _key_lookup()
    with connection.cursor() as cursor:
        cursor.execute(sql, [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    api_key = _instance(WorkspaceApiKey, key_fields, row[: len(key_fields)])
    api_key.workspace = _instance(Workspace, workspace_fields, row[len(key_fields) :])
    return api_key


_Converters = tuple[tuple[Col, tuple[Any, ...]], ...]


@cache
def _key_lookup() -> tuple[str, _Converters, _Converters]:
    """The key's and its workspace's columns by prefix, and each field with the converters the ORM applies
    to its value."""
    quote = connection.ops.quote_name

    def columns(model: type[Model], alias: str) -> tuple[list[str], _Converters]:
        fields = model._meta.concrete_fields
        cols = [field.get_col(alias) for field in fields]  # what the ORM's compiler converts by (get_converters)
        converters = tuple(
            (col, (*connection.ops.get_db_converters(col), *col.get_db_converters(connection))) for col in cols
        )
        return [f"{alias}.{quote(field.column)}" for field in fields], converters

    key_columns, key_fields = columns(WorkspaceApiKey, "k")
    workspace_columns, workspace_fields = columns(Workspace, "w")
    workspace_key = WorkspaceApiKey._meta.get_field("workspace")
    sql = (
        f"SELECT {', '.join(key_columns + workspace_columns)} FROM {quote(WorkspaceApiKey._meta.db_table)} k "
        f"JOIN {quote(Workspace._meta.db_table)} w ON w.{quote(Workspace._meta.pk.column)} = "  # type: ignore[union-attr]
        f"k.{quote(workspace_key.column)} WHERE k.{quote(WorkspaceApiKey._meta.get_field('prefix').column)} = %s"
    )
    return sql, key_fields, workspace_fields


def _instance(model: type[Model], fields: _Converters, values: tuple[Any, ...]) -> Any:
    converted = []
    for (col, converters), value in zip(fields, values, strict=True):
        for converter in converters:
            value = converter(value, col, connection)
        converted.append(value)
    return model.from_db(connection.alias, [col.target.attname for col, _ in fields], converted)


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
