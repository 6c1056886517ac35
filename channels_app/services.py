"""Workspace configuration services: workspaces, look-ups, API keys and channels' settings."""

from datetime import timedelta
from typing import cast

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from channels_app.models import BURST_WINDOW_MAX_MS, Channel, Workspace, WorkspaceApiKey
from config.errors import ApplicationError, InvalidRequest, NotFound


class NotFoundError(NotFound):
    """A workspace or an API key that the caller (a command) named does not exist."""


class WorkspaceSlugTaken(ApplicationError):
    code = "workspace_slug_taken"
    status_code = 409
    default_message = "Another workspace has that slug. Choose another slug."


class ApiKeyRevoked(ApplicationError):
    code = "api_key_revoked"
    status_code = 409
    default_message = "The API key is revoked. Create a new key instead of rotating it."


def workspace_create(*, name: str, slug: str) -> Workspace:
    """A new workspace, with no credits. Within the caller's transaction, if any: the slug's unique index
    settles two creations of one slug at once, the later one gets WorkspaceSlugTaken."""
    try:
        with transaction.atomic():
            return Workspace.objects.create(name=name, slug=slug)
    except IntegrityError as error:
        if not Workspace.objects.filter(slug=slug).exists():
            raise
        raise WorkspaceSlugTaken(
            f"The slug {slug!r} is taken by another workspace. Choose another slug.", details={"slug": slug}
        ) from error


def workspace_get(*, ref: str) -> Workspace:
    """A workspace by id or slug."""
    workspace = Workspace.objects.filter(pk=ref).first() or Workspace.objects.filter(slug=ref).first()
    if workspace is None:
        raise NotFoundError(f"No workspace with id or slug {ref!r}.")
    return workspace


APIKEY_ROTATION_GRACE = timedelta(hours=24)  # README "Rotating a key": the old key's default grace
# Longer than this an old key is not being rotated out but kept; it also keeps the expiry date in range.
APIKEY_ROTATION_GRACE_MAX = timedelta(days=365)


def apikey_create(*, workspace: Workspace, name: str = "default", expires_at=None) -> tuple[WorkspaceApiKey, str]:
    """A new key; the plain key is returned once and stored only as a hash."""
    api_key, key = WorkspaceApiKey.objects.create_key(workspace=workspace, name=name[:50], expiry_date=expires_at)
    # The library annotates create_key as returning its abstract base; the manager creates this model.
    return cast(WorkspaceApiKey, api_key), key


def apikey_get(*, prefix: str) -> WorkspaceApiKey:
    api_key = WorkspaceApiKey.objects.select_related("workspace").filter(prefix=prefix).first()
    if api_key is None:
        raise NotFoundError(f"No API key with prefix {prefix!r}. `manage.py apikey list --workspace W` lists them.")
    return api_key


def apikey_list(*, workspace: Workspace) -> QuerySet[WorkspaceApiKey]:
    """The workspace's keys, newest first, revoked and expired ones included."""
    return WorkspaceApiKey.objects.filter(workspace=workspace).order_by("-created")


@transaction.atomic
def apikey_rotate(*, prefix: str, grace: timedelta) -> tuple[WorkspaceApiKey, str]:
    """A new key for the same workspace; the old one keeps working for `grace`, then fails with 401."""
    old = apikey_get(prefix=prefix)
    if old.revoked:
        raise ApiKeyRevoked(f"The key {prefix!r} is revoked; create a new key instead of rotating it.")
    expiry = timezone.now() + grace
    if old.expiry_date is None or old.expiry_date > expiry:
        old.expiry_date = expiry
        old.save(update_fields=["expiry_date"])
    return apikey_create(workspace=old.workspace, name=old.name)


def apikey_revoke(*, prefix: str) -> WorkspaceApiKey:
    api_key = apikey_get(prefix=prefix)
    WorkspaceApiKey.objects.filter(pk=api_key.pk).update(revoked=True)
    api_key.revoked = True
    return api_key


def channel_settings_set(
    *,
    channel_id: str,
    burst_mode: str | None = None,
    burst_window_ms: int | None = None,
    inactivity_timeout_seconds: int | None = None,
) -> Channel:
    """Change the channel's settings that are given (None: left as they are) and return the channel. Raises
    NotFoundError for an unknown channel and InvalidRequest, naming the setting, for a value out of range."""
    errors = {}
    if burst_mode is not None and burst_mode not in Channel.BurstMode.values:
        errors["burstMode"] = f"{burst_mode!r} is not a burst mode. Use queue or latest."
    if burst_window_ms is not None and not 0 <= burst_window_ms <= BURST_WINDOW_MAX_MS:
        errors["burstWindowMs"] = f"{burst_window_ms} is out of range. Use 0 to {BURST_WINDOW_MAX_MS} milliseconds."
    if inactivity_timeout_seconds is not None and inactivity_timeout_seconds < 0:
        errors["inactivityTimeoutSeconds"] = (
            f"{inactivity_timeout_seconds} is negative. Use a number of seconds, or 0 to never close for inactivity."
        )
    if errors:
        raise InvalidRequest(" ".join(errors.values()), details=errors)
    changes = {
        name: value
        for name, value in (
            ("burst_mode", burst_mode),
            ("burst_window_ms", burst_window_ms),
            ("inactivity_timeout_seconds", inactivity_timeout_seconds),
        )
        if value is not None
    }
    with transaction.atomic():
        channel = Channel.objects.select_for_update(no_key=True).filter(pk=channel_id).first()
        if channel is None:
            raise NotFoundError(f"No channel with id {channel_id!r}. The admin's Channels page lists their ids.")
        for name, value in changes.items():
            setattr(channel, name, value)
        if changes:
            channel.save(update_fields=[*changes, "updated_at"])
    return channel
