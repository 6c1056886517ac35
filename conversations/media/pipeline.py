"""The media step of the request's think phase: from a message's URL to what the agent is given.

Download (or take from the cache), check that the bytes are what the message says, store them once, link
the message to the asset, and build the `MediaPart`: an image's bytes for vision models, a document's text,
an audio's transcription when the agent asks for one; a video (and audio otherwise) is described to the
agent by its caption and type.

No transaction or row lock is held here, and the connection goes back to the pool before every slow step
(download, storage, transcription): the short reads and writes around them open it again.
"""

import time
from dataclasses import replace

from django.conf import settings
from django.utils import timezone

from config.db import connection_release
from config.errors import ApplicationError
from config.metrics import media_download_observe
from conversations.agents.base import AgentConfig, AudioTranscriber, HistoryItem, MediaPart, get_backend, provider_has
from conversations.media.cache import (
    media_asset_attach,
    media_asset_cached,
    media_asset_create,
    media_asset_text_set,
    media_file_read,
    media_file_read_stored,
    media_file_store,
)
from conversations.media.download import media_download
from conversations.media.inspect import (
    IMAGE_MIME_TYPES,
    content_type_charset,
    document_extract_text,
    media_check_type,
    media_sniff,
    text_clean,
)
from conversations.models import MediaAsset, Message, media_filename

# A document's text (or an audio's transcription) kept with its asset: about 5,000 tokens, several pages of
# a contract or an invoice. The agent gets at most its own history budget (`history_max_chars`) of it.
DOCUMENT_TEXT_MAX_CHARS = 20_000


def media_prepare(*, message: Message, agent: AgentConfig, workspace_id: str) -> MediaPart:
    """Fetch and check the media of the inbound `message` (IMAGE, AUDIO, VIDEO or DOCUMENT) for `agent`.

    Precondition: no transaction is open (the think phase). Raises MediaUrlNotAllowed, MediaUnreachable,
    MediaTooLarge or MediaTypeMismatch with `details.field` naming the request field (e.g.
    "content.image.url"); transcription raises the agent's errors (AgentTimeout, AgentUnavailable).
    """
    kind = message.type.lower()
    body = message.content.get(kind) or {}
    url = str(body["url"])
    field = f"content.{kind}.url"
    filename = media_filename(type=message.type, content=message.content)
    asset = media_asset_cached(workspace_id=workspace_id, url=url, now=timezone.now())
    data: bytes | None = None
    if asset is not None:
        # The same URL may come back declared as another type: the check is the request's, not the cache's.
        media_check_type(declared_type=message.type, mime_type=asset.mime_type, filename=filename, field=field)
        if _needs_bytes(message_type=message.type, agent=agent):
            connection_release()  # the storage may be remote (S3)
            data = media_file_read(asset=asset)
            if data is None:
                asset = None
    if asset is None:
        asset, data = _download_and_store(
            message=message, workspace_id=workspace_id, url=url, field=field, filename=filename
        )
    else:
        media_asset_attach(asset=asset, message_id=message.pk)
    return MediaPart(
        url=url,
        mime_type=asset.mime_type,
        size=asset.size,
        filename=filename,
        caption=str(body.get("caption") or ""),
        data=data if message.type == Message.Type.IMAGE else None,
        text=_text_for_agent(message_type=message.type, agent=agent, asset=asset, data=data, filename=filename),
    )


def history_media_load(*, history: list[HistoryItem], agent: AgentConfig) -> list[HistoryItem]:
    """`history` with the bytes of its earlier images, newest first, each that still fits in
    settings.MEDIA_HISTORY_IMAGE_BYTES; the others stay without bytes and reach the model as a description.

    Read from Django storage (the files cached when those messages arrived), never downloaded again: an
    image's URL is the contact's, often signed, and never goes to the provider. Only for a backend that
    `sees_images` (the built-in one reads no image). The last item, the message being answered, stays as it is.
    Precondition: no connection held (the storage may be remote); no database access.
    """
    if len(history) < 2 or not provider_has(agent.provider, "sees_images"):
        return history
    budget = int(settings.MEDIA_HISTORY_IMAGE_BYTES)
    loaded = list(history)
    for index in range(len(loaded) - 2, -1, -1):
        item = loaded[index]
        media = item.media
        if item.type != Message.Type.IMAGE or media is None or not media.stored_name or media.data is not None:
            continue
        if media.mime_type not in IMAGE_MIME_TYPES or not 0 < media.size <= budget:
            continue
        data = media_file_read_stored(name=media.stored_name, sha256=media.sha256)
        if data is None or len(data) > budget:
            continue
        budget -= len(data)
        loaded[index] = replace(item, media=replace(media, data=data))
    return loaded


def _download_and_store(
    *, message: Message, workspace_id: str, url: str, field: str, filename: str
) -> tuple[MediaAsset, bytes]:
    connection_release()
    started = time.monotonic()
    try:
        downloaded = media_download(url=url, field=field)
    except ApplicationError as error:
        media_download_observe(0, time.monotonic() - started, error.code)
        raise
    media_download_observe(downloaded.size, downloaded.elapsed)
    mime_type = media_sniff(data=downloaded.data)
    media_check_type(declared_type=message.type, mime_type=mime_type, filename=filename, field=field)
    text = ""
    if message.type == Message.Type.DOCUMENT:
        # Before the file and its asset row are stored, so a retry finds both (the text is always storable).
        text = document_extract_text(
            data=downloaded.data,
            mime_type=mime_type,
            limit_chars=DOCUMENT_TEXT_MAX_CHARS,
            charset=content_type_charset(downloaded.content_type),
        )
    file_name = media_file_store(sha256=downloaded.sha256, mime_type=mime_type, data=downloaded.data)
    asset = media_asset_create(
        workspace_id=workspace_id,
        url=url,
        sha256=downloaded.sha256,
        file_name=file_name,
        mime_type=mime_type,
        size=downloaded.size,
        text=text,
        message_id=message.pk,
        now=timezone.now(),
    )
    return asset, downloaded.data


def _needs_bytes(*, message_type: str, agent: AgentConfig) -> bool:
    return message_type == Message.Type.IMAGE or (message_type == Message.Type.AUDIO and _transcribes(agent))


def _transcriber(agent: AgentConfig) -> AudioTranscriber | None:
    """The agent's backend when the agent asks for transcriptions and its backend can make them."""
    if not agent.transcribe_audio:
        return None
    backend = get_backend(agent.provider)
    return backend if isinstance(backend, AudioTranscriber) else None


def _transcribes(agent: AgentConfig) -> bool:
    return _transcriber(agent) is not None


def _text_for_agent(
    *, message_type: str, agent: AgentConfig, asset: MediaAsset, data: bytes | None, filename: str
) -> str:
    limit = min(DOCUMENT_TEXT_MAX_CHARS, agent.history_max_chars)
    if message_type == Message.Type.DOCUMENT:
        return asset.text[:limit]
    transcriber = _transcriber(agent) if message_type == Message.Type.AUDIO else None
    if transcriber is not None and data is not None:
        connection_release()  # the provider may take seconds
        text = text_clean(transcriber.transcribe(agent=agent, data=data, filename=filename, mime_type=asset.mime_type))[
            :DOCUMENT_TEXT_MAX_CHARS
        ]
        media_asset_text_set(asset=asset, text=text)
        return text[:limit]
    return ""
