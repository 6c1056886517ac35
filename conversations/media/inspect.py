"""What a downloaded file really is, whether it fits the message's type, and its text for the agent.

The type check trusts the bytes (libmagic), never the server's Content-Type or the URL. The file name's
extension only settles the cases where libmagic sees a container but cannot name the format inside.
"""

from __future__ import annotations

import codecs
import logging
import re
from pathlib import PurePosixPath

import magic

from .errors import MediaTypeMismatch
from .extract import pdf_text_extract

logger = logging.getLogger(__name__)

SNIFF_BYTES = 1024 * 1024  # libmagic decides from a file's head; bounding its input bounds its CPU time
PDF_MAX_PAGES = 50  # the agent reads the first pages; a 2,000-page PDF must not cost seconds per message
UNKNOWN_MIME_TYPE = "application/octet-stream"

# IMAGE: raster formats browsers and vision models read. SVG is left out on purpose: it is an XML document
# that can carry scripts and external references, not a picture.
# Each type with the format's name, which the type error lists (the one list of accepted images).
IMAGE_FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WebP",
    "image/bmp": "BMP",
    "image/x-ms-bmp": "BMP",  # libmagic has used both names for BMP
    "image/tiff": "TIFF",
    "image/heic": "HEIC",  # HEIC, HEIF and AVIF: what phones and cameras send
    "image/heif": "HEIF",
    "image/avif": "AVIF",
}
IMAGE_MIME_TYPES = frozenset(IMAGE_FORMATS)

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

# Documents whose text document_extract_text decodes (text_decode).
TEXT_MIME_TYPES = frozenset({"text/plain", "text/csv", "application/csv"})

# Byte order marks, longest first: a UTF-32 LE mark starts like the UTF-16 LE one. A mark decides the
# encoding over any declared charset (as browsers do): a server's label is often a default, the mark never.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Python codecs that decode bytes to text but are no charset a server could mean; punycode and idna are
# also quadratic on long input. A declared charset naming one of them is ignored.
_NOT_CHARSETS = frozenset({"idna", "punycode", "unicode_escape", "raw_unicode_escape", "undefined"})
# Without a mark, a label or valid UTF-8, the bytes are read as Windows-1252: the commonest 8-bit encoding
# of documents (libmagic calls it iso-8859-1, which it extends), and with errors="replace" it never fails.
TEXT_FALLBACK_ENCODING = "cp1252"
# What PostgreSQL cannot store in a text column (NUL) and what no UTF-8 encoder accepts (surrogates): pypdf
# hands out both from a PDF's own character maps.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def _either(names: list[str]) -> str:
    """ "A, B or C"."""
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names)


_WHAT_TO_SEND = {
    "IMAGE": f"a {_either(list(dict.fromkeys(IMAGE_FORMATS.values())))} image",
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


def document_extract_text(*, data: bytes, mime_type: str, limit_chars: int = 20000, charset: str = "") -> str:
    """The document's text for the agent, at most `limit_chars` characters; "" when there is none to read.

    PDF through pypdf (first PDF_MAX_PAGES pages); plain text and CSV by their byte order mark, else the
    declared `charset` (the server's Content-Type parameter), else UTF-8, else Windows-1252 (text_decode).
    The text is always safe to store (text_clean: no NUL, no lone surrogate). Never raises on a broken or
    hostile file: it returns "" (or what it read before the damage).
    """
    if limit_chars <= 0:
        return ""
    mime = _normalize(mime_type)
    if mime == "application/pdf":
        return _pdf_text(data=data, limit_chars=limit_chars)
    if mime in TEXT_MIME_TYPES or mime.startswith("text/"):
        return text_decode(data=data, charset=charset, limit_chars=limit_chars)
    return ""


def text_decode(*, data: bytes, charset: str = "", limit_chars: int = 20000) -> str:
    """A text file's first `limit_chars` characters, safe to store (text_clean). Never raises.

    The encoding is the byte order mark's (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE), else `charset` (the
    server's declared charset, when Python knows it), else UTF-8 when the bytes are valid UTF-8, else
    TEXT_FALLBACK_ENCODING. Undecodable bytes become U+FFFD.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _decode_head(data=data[len(bom) :], encoding=encoding, limit_chars=limit_chars)
    declared = _charset_codec(charset)
    if declared is not None:
        return _decode_head(data=data, encoding=declared, limit_chars=limit_chars)
    head = data[: limit_chars * 4]
    try:
        # A cut through the last character of the head is not an error: a strict incremental decode
        # keeps it back instead of failing.
        codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=len(head) == len(data))
    except UnicodeDecodeError:
        return _decode_head(data=data, encoding=TEXT_FALLBACK_ENCODING, limit_chars=limit_chars)
    return _decode_head(data=data, encoding="utf-8", limit_chars=limit_chars)


def text_clean(text: str) -> str:
    """`text` without what a database or a UTF-8 encoder refuses: NUL characters are dropped, a surrogate
    pair written as two code points becomes its character, a lone surrogate becomes U+FFFD."""
    if not _UNSTORABLE.search(text):
        return text
    # Through UTF-16 and back: a valid pair joins into one character, a lone half becomes U+FFFD.
    return text.replace("\x00", "").encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _decode_head(*, data: bytes, encoding: str, limit_chars: int) -> str:
    # 4 bytes per character at most in every encoding accepted here: decode no more than the limit can use.
    head = data[: limit_chars * 4]
    try:
        decoder = codecs.getincrementaldecoder(encoding)("replace")
        text = decoder.decode(head, final=len(head) == len(data))
    except Exception:  # a codec's own failure on hostile bytes; the fallback never fails
        logger.info("could not decode a text document as %s", encoding, exc_info=True)
        text = head.decode(TEXT_FALLBACK_ENCODING, errors="replace")
    return text_clean(text[:limit_chars])


def _charset_codec(charset: str) -> str | None:
    """The Python codec for a declared charset, or None for an unknown name or one that is no charset."""
    if not charset:
        return None
    try:
        info = codecs.lookup(charset.strip().strip('"').strip("'"))
    except (LookupError, ValueError):
        return None
    if info.name in _NOT_CHARSETS or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def content_type_charset(content_type: str) -> str:
    """The charset parameter of a Content-Type header (`text/plain; charset=utf-16` -> "utf-16"), or ""."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').strip("'")[:40]
    return ""


def _pdf_text(*, data: bytes, limit_chars: int) -> str:
    """pypdf in a child process with hard limits (conversations/media/extract.py): a PDF can cost seconds
    of CPU a page, which in a gevent worker would stop every other request."""
    return text_clean(pdf_text_extract(data=data, max_pages=PDF_MAX_PAGES, limit_chars=limit_chars).text)


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
