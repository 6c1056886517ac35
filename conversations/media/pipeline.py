"""The media step of the request's think phase: from a message's URL to what the agent is given.

Download (or take from the cache), check that the bytes are what the message says, store them once, link
the message to the asset, and build the `MediaPart`: an image's bytes for vision models, a document's text,
an audio's transcription when the agent asks for one; a video (and audio otherwise) is described to the
agent by its caption and type.

No transaction or row lock is held here, and the connection goes back to the pool before every slow step
(download, storage, transcription): the short reads and writes around them open it again.
"""

import time
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from django.db import connection
from django.utils import timezone

from config.errors import ApplicationError
from config.metrics import media_download_observe
from conversations.agents.base import AgentConfig, AudioTranscriber, MediaPart, get_backend
from conversations.media.cache import (
    media_asset_attach,
    media_asset_cached,
    media_asset_create,
    media_file_read,
    media_file_store,
)
from conversations.media.download import media_download
from conversations.media.inspect import document_extract_text, media_check_type, media_sniff
from conversations.models import MediaAsset, Message

# A document's text kept with its asset: about 5,000 tokens, several pages of a contract or an invoice.
# The agent gets at most its own history budget (`history_max_chars`) of it.
DOCUMENT_TEXT_MAX_CHARS = 20_000
FILENAME_MAX = 255  # the API's limit for `filename`; a URL's last segment is cut to it


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
    filename = str(body.get("filename") or "") or _url_filename(url)
    asset = media_asset_cached(workspace_id=workspace_id, url=url, now=timezone.now())
    data: bytes | None = None
    if asset is not None:
        # The same URL may come back declared as another type: the check is the request's, not the cache's.
        media_check_type(declared_type=message.type, mime_type=asset.mime_type, filename=filename, field=field)
        if _needs_bytes(message_type=message.type, agent=agent):
            _connection_release()  # the storage may be remote (S3)
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


def _download_and_store(
    *, message: Message, workspace_id: str, url: str, field: str, filename: str
) -> tuple[MediaAsset, bytes]:
    _connection_release()
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
        text = document_extract_text(data=downloaded.data, mime_type=mime_type, limit_chars=DOCUMENT_TEXT_MAX_CHARS)
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
        _connection_release()  # the provider may take seconds
        return transcriber.transcribe(agent=agent, data=data, filename=filename, mime_type=asset.mime_type)[:limit]
    return ""


def _url_filename(url: str) -> str:
    """The URL path's last segment, decoded: what the type check reads an extension from when the request
    names no file."""
    try:
        path = urlsplit(url).path
    except ValueError:  # media_download refuses such a URL with the contract's error
        return ""
    return PurePosixPath(unquote(path)).name[:FILENAME_MAX]


def _connection_release() -> None:
    """Give the connection back to the pool before a slow step, unless a caller's transaction is open
    (tests that wrap each test in a transaction keep theirs). The same rule as the messages pipeline's."""
    if not connection.in_atomic_block:
        connection.close()
