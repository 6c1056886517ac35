"""What a downloaded file really is, whether it fits the message's type, and its text for the agent.

The type check trusts the bytes (libmagic), never the server's Content-Type or the URL. The file name's
extension only settles the cases where libmagic sees a container but cannot name the format inside.
"""

from __future__ import annotations

import io
import logging
from pathlib import PurePosixPath

import magic
from pypdf import PdfReader

from .errors import MediaTypeMismatch

logger = logging.getLogger(__name__)

SNIFF_BYTES = 1024 * 1024  # libmagic decides from a file's head; bounding its input bounds its CPU time
PDF_MAX_PAGES = 50  # the agent reads the first pages; a 2,000-page PDF must not cost seconds per message
UNKNOWN_MIME_TYPE = "application/octet-stream"

# IMAGE: raster formats browsers and vision models read. SVG is left out on purpose: it is an XML document
# that can carry scripts and external references, not a picture.
IMAGE_MIME_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/x-ms-bmp",  # libmagic has used both names for BMP
        "image/tiff",
        "image/heic",
        "image/heif",
        "image/avif",  # what phones and cameras send
    }
)

# AUDIO: anything libmagic names audio/* (mp3 audio/mpeg, wav audio/x-wav, m4a audio/x-m4a, ogg, flac,
# amr, aac, ...), plus containers libmagic names by their video variant because it does not look at the
# tracks: an m4a with a generic brand reads as video/mp4, WebM and 3GP voice notes (browsers' and phones'
# recorders) as video/webm and video/3gpp, Ogg sometimes as application/ogg.
AUDIO_MIME_PREFIX = "audio/"
AUDIO_CONTAINER_MIME_TYPES = frozenset(
    {
        "video/mp4",
        "video/webm",
        "video/3gpp",
        "video/3gpp2",
        "video/ogg",
        "application/ogg",
    }
)

# VIDEO: anything libmagic names video/* (mp4, quicktime, webm, x-matroska, 3gpp, x-msvideo, ...), plus
# Ogg, which libmagic may name application/ogg.
VIDEO_MIME_PREFIX = "video/"
VIDEO_EXTRA_MIME_TYPES = frozenset({"application/ogg"})

# DOCUMENT: the documented list (PDF, plain text, CSV, Office and OpenDocument formats), by the names
# libmagic gives them when it recognises them.
DOCUMENT_MIME_TYPES = frozenset(
    {
        "application/pdf",
        "text/plain",
        "text/csv",
        "application/csv",  # libmagic 5.38+ names CSV; older versions and other tools vary
        "application/msword",  # .doc
        "application/vnd.ms-excel",  # .xls
        "application/vnd.ms-powerpoint",  # .ppt
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",  # .docx
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",  # .xlsx
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",  # .pptx
        "application/vnd.oasis.opendocument.text",  # .odt
        "application/vnd.oasis.opendocument.spreadsheet",  # .ods
        "application/vnd.oasis.opendocument.presentation",  # .odp
    }
)

# What libmagic reports for an accepted document when it sees only the container; accepted only when the
# file name's extension says which document it is.
# OOXML and OpenDocument files are zip archives: libmagic names them only when the telltale entry comes
# first in the archive, else application/zip, or application/octet-stream ("Microsoft OOXML" has no MIME
# type in its magic).
_ZIP_CONTAINER_MIME_TYPES = frozenset({"application/zip", "application/octet-stream"})
# .doc/.xls/.ppt are OLE2 compound files: libmagic often names only the container.
_OLE_CONTAINER_MIME_TYPES = frozenset({"application/cdfv2", "application/x-ole-storage", "application/vnd.ms-office"})
DOCUMENT_CONTAINER_MIME_TYPES_BY_EXTENSION = {
    "docx": _ZIP_CONTAINER_MIME_TYPES,
    "xlsx": _ZIP_CONTAINER_MIME_TYPES,
    "pptx": _ZIP_CONTAINER_MIME_TYPES,
    "odt": _ZIP_CONTAINER_MIME_TYPES,
    "ods": _ZIP_CONTAINER_MIME_TYPES,
    "odp": _ZIP_CONTAINER_MIME_TYPES,
    "doc": _OLE_CONTAINER_MIME_TYPES,
    "xls": _OLE_CONTAINER_MIME_TYPES,
    "ppt": _OLE_CONTAINER_MIME_TYPES,
}
# libmagic guesses a programming language for some plain text (text/x-c, text/x-Algol68, ...): any
# text/* is accepted when the file name says .txt or .csv.
DOCUMENT_TEXT_EXTENSIONS = frozenset({"txt", "csv"})

# Documents whose text document_extract_text reads as UTF-8.
TEXT_MIME_TYPES = frozenset({"text/plain", "text/csv", "application/csv"})

_WHAT_TO_SEND = {
    "IMAGE": "a JPEG, PNG, GIF or WebP image",
    "AUDIO": "an audio file such as MP3, M4A, WAV or OGG",
    "VIDEO": "a video file such as MP4, MOV or WebM",
    "DOCUMENT": (
        "a PDF, plain text, CSV or Office document (DOC, DOCX, XLS, XLSX, PPT, PPTX, ODT, ODS, ODP) with its file name"
    ),
}


def media_sniff(*, data: bytes) -> str:
    """The MIME type libmagic reads from the bytes, e.g. "image/png"; "application/x-empty" for no bytes."""
    if not data:
        return "application/x-empty"
    try:
        return magic.from_buffer(data[:SNIFF_BYTES], mime=True) or UNKNOWN_MIME_TYPE
    except magic.MagicException:
        logger.warning("libmagic could not read a media file", exc_info=True)
        return UNKNOWN_MIME_TYPE


def media_type_accepts(*, declared_type: str, mime_type: str, filename: str = "") -> bool:
    """Whether a file libmagic names `mime_type` may be sent as a message of `declared_type`."""
    mime = _normalize(mime_type)
    if declared_type == "IMAGE":
        return mime in IMAGE_MIME_TYPES
    if declared_type == "AUDIO":
        return mime.startswith(AUDIO_MIME_PREFIX) or mime in AUDIO_CONTAINER_MIME_TYPES
    if declared_type == "VIDEO":
        return mime.startswith(VIDEO_MIME_PREFIX) or mime in VIDEO_EXTRA_MIME_TYPES
    if declared_type == "DOCUMENT":
        if mime in DOCUMENT_MIME_TYPES:
            return True
        extension = _extension(filename)
        if extension in DOCUMENT_TEXT_EXTENSIONS and mime.startswith("text/"):
            return True
        return mime in DOCUMENT_CONTAINER_MIME_TYPES_BY_EXTENSION.get(extension, frozenset())
    raise ValueError(f"{declared_type!r} is not a media message type")


def media_check_type(*, declared_type: str, mime_type: str, filename: str = "", field: str = "type") -> None:
    """Raise MediaTypeMismatch unless the file fits `declared_type` (IMAGE, AUDIO, VIDEO or DOCUMENT).

    `mime_type` is media_sniff's answer, never the server's Content-Type. `filename` is the document's
    file name (the request's, else the URL path's last segment); only its extension is used. `field` names
    the request field to fix in the error details.
    """
    if media_type_accepts(declared_type=declared_type, mime_type=mime_type, filename=filename):
        return
    detected = _normalize(mime_type)
    suggestion = next(
        (
            other
            for other in _WHAT_TO_SEND
            if other != declared_type and media_type_accepts(declared_type=other, mime_type=detected, filename=filename)
        ),
        None,
    )
    message = (
        f"The file is {detected}, which is not accepted for {_article(declared_type)} {declared_type} message. "
        f"Send {_WHAT_TO_SEND[declared_type]}"
    )
    message += f", or set type to {suggestion}." if suggestion else "."
    raise MediaTypeMismatch(
        message,
        details={
            "field": field,
            "declaredType": declared_type,
            "detectedMimeType": detected,
            "allowed": _allowed(declared_type),
        },
    )


def document_extract_text(*, data: bytes, mime_type: str, limit_chars: int = 20000) -> str:
    """The document's text for the agent, at most `limit_chars` characters; "" when there is none to read.

    PDF through pypdf (first PDF_MAX_PAGES pages), plain text and CSV as UTF-8 with replacement characters.
    Never raises on a broken or hostile file: it returns "" (or what it read before the damage).
    """
    if limit_chars <= 0:
        return ""
    mime = _normalize(mime_type)
    if mime == "application/pdf":
        return _pdf_text(data=data, limit_chars=limit_chars)
    if mime in TEXT_MIME_TYPES or mime.startswith("text/"):
        # 4 bytes per character at most in UTF-8: decode no more than the limit can use.
        return data[: limit_chars * 4].decode("utf-8-sig", errors="replace")[:limit_chars]
    return ""


def _pdf_text(*, data: bytes, limit_chars: int) -> str:
    parts: list[str] = []
    total = 0
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            return ""  # needs a password we do not have
        for index in range(min(len(reader.pages), PDF_MAX_PAGES)):
            try:
                text = (reader.pages[index].extract_text() or "").strip()
            except Exception:  # one broken page must not hide the others
                logger.info("pypdf could not read page %s", index, exc_info=True)
                continue
            if text:
                parts.append(text)
                total += len(text)
            if total >= limit_chars:
                break
    except Exception:  # pypdf raises many types on malformed files; a broken PDF is just one without text
        logger.info("pypdf could not read a PDF", exc_info=True)
    return "\n\n".join(parts)[:limit_chars]


def _normalize(mime_type: str) -> str:
    return mime_type.split(";", 1)[0].strip().lower()


def _extension(filename: str) -> str:
    return PurePosixPath(filename.strip()).suffix.lower().lstrip(".")


def _allowed(declared_type: str) -> list[str]:
    if declared_type == "IMAGE":
        return sorted(IMAGE_MIME_TYPES)
    if declared_type == "AUDIO":
        return [AUDIO_MIME_PREFIX + "*", *sorted(AUDIO_CONTAINER_MIME_TYPES)]
    if declared_type == "VIDEO":
        return [VIDEO_MIME_PREFIX + "*", *sorted(VIDEO_EXTRA_MIME_TYPES)]
    return sorted(DOCUMENT_MIME_TYPES)


def _article(word: str) -> str:
    """ "an IMAGE message", "an AUDIO message", "a VIDEO message": the article goes by the vowel sound."""
    return "an" if word[:1].upper() in "AEIOU" else "a"
