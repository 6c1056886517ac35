"""The media cache: downloaded files stored once through Django's storage, keyed by their SHA-256.

Storage goes through `default_storage` only, so S3 (django-storages) replaces the local folder without code
changes. Asset rows say which URL gave which file until when; the file's name is derived from its bytes, so
identical files share one stored file and a file is deleted only when no asset row names it any more.
"""

import hashlib
import logging
import mimetypes
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from conversations.models import MediaAsset, Message

logger = logging.getLogger(__name__)

STORAGE_PREFIX = "media"
# Rows per delete: small enough that one transaction (and the SET NULL on the messages that name them)
# stays short, large enough that a day's backlog is a few hundred statements.
PURGE_BATCH_SIZE = 500
# An asset is deleted this long after it stops being served: a request that found it just before it expired
# links its message to it a moment later, and the row must still be there.
PURGE_GRACE_SECONDS = 300


def url_sha256(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def media_asset_cached(*, workspace_id: str, url: str, now: datetime) -> MediaAsset | None:
    """The workspace's newest unexpired asset downloaded from exactly `url`, if any. One indexed query."""
    return (
        MediaAsset.objects.filter(workspace_id=workspace_id, url_sha256=url_sha256(url), url=url, expires_at__gt=now)
        .order_by("-expires_at")
        .first()
    )


def media_file_name(*, sha256: str, mime_type: str) -> str:
    """`media/ab/abcdef….png`: the bytes decide the name; the extension only helps whoever browses the files."""
    extension = mimetypes.guess_extension(mime_type, strict=True) or ""
    return f"{STORAGE_PREFIX}/{sha256[:2]}/{sha256}{extension}"


def media_file_store(*, sha256: str, mime_type: str, data: bytes) -> str:
    """Write the bytes once; return the stored name. No database: call it with no connection held.

    A name that exists already holds the same bytes (it is their hash), so it is not written again. Two
    requests storing the same new file at once may both write; the storage then gives the second an
    alternative name, which its asset row records and the clean-up deletes with it.
    """
    name = media_file_name(sha256=sha256, mime_type=mime_type)
    if default_storage.exists(name):
        return name
    return default_storage.save(name, ContentFile(data))


def media_file_read(*, asset: MediaAsset) -> bytes | None:
    """The cached bytes, or None when the file is gone (deleted by a clean-up racing with the asset's
    creation, or lost with the storage): the caller downloads again."""
    return media_file_read_stored(name=asset.file.name, sha256=asset.sha256)


def media_file_read_stored(*, name: str, sha256: str) -> bytes | None:
    """The bytes stored under `name`, or None when the file is gone or does not match `sha256`. No
    database: call it with no connection held (the storage may be remote)."""
    try:
        with default_storage.open(name, "rb") as stored:
            data = stored.read()
    except OSError:
        logger.warning("media file %s is missing", name)
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        logger.warning("media file %s does not match its hash", name)
        return None
    return data


def media_asset_create(
    *,
    workspace_id: str,
    url: str,
    sha256: str,
    file_name: str,
    mime_type: str,
    size: int,
    text: str,
    message_id: str,
    now: datetime,
) -> MediaAsset:
    """Record a stored file as the cache entry for `url` and link the inbound message to it."""
    with transaction.atomic():
        asset = MediaAsset.objects.create(
            workspace_id=workspace_id,
            url=url,
            url_sha256=url_sha256(url),
            sha256=sha256,
            file=file_name,
            mime_type=mime_type,
            size=size,
            text=text,
            expires_at=now + timedelta(seconds=settings.MEDIA_CACHE_SECONDS),
        )
        media_asset_attach(asset=asset, message_id=message_id)
    return asset


def media_asset_attach(*, asset: MediaAsset, message_id: str) -> None:
    Message.objects.filter(pk=message_id).update(
        media_asset=asset, media_mime_type=asset.mime_type, media_size=asset.size
    )


def media_asset_text_set(*, asset: MediaAsset, text: str) -> None:
    """Keep an audio's transcription with its asset, where a document keeps its text: later turns of the
    conversation read it from the history's one query (conversations.selectors.history_window)."""
    MediaAsset.objects.filter(pk=asset.pk).update(text=text)


@dataclass
class MediaPurged:
    assets: int = 0
    files: int = 0


def media_assets_purge(*, now: datetime, batch_size: int = PURGE_BATCH_SIZE) -> MediaPurged:
    """Delete the assets expired (PURGE_GRACE_SECONDS before `now`), then every file no remaining asset row
    names, batch by batch.

    Each batch's rows go in one short transaction (their messages keep the MIME type and size, and lose
    the link). A file goes after its rows, and only when no other row, expired or live, names it: a live
    asset of the same bytes keeps the file, and the last expired one takes it along in its own batch.
    """
    cutoff = now - timedelta(seconds=PURGE_GRACE_SECONDS)
    purged = MediaPurged()
    while True:
        batch = list(
            MediaAsset.objects.filter(expires_at__lte=cutoff).order_by("pk").values_list("pk", "file")[:batch_size]
        )
        if not batch:
            return purged
        with transaction.atomic():
            _, deleted = MediaAsset.objects.filter(pk__in=[pk for pk, _ in batch], expires_at__lte=cutoff).delete()
        purged.assets += deleted.get(MediaAsset._meta.label, 0)
        names = {name for _, name in batch if name}
        still_named = set(MediaAsset.objects.filter(file__in=names).values_list("file", flat=True))
        for name in sorted(names - still_named):
            if default_storage.exists(name):
                default_storage.delete(name)
                purged.files += 1
        if len(batch) < batch_size:
            return purged
