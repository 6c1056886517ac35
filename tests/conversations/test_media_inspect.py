"""media_sniff, media_check_type and document_extract_text on small real files built here. No database."""

import codecs
import io
import struct
import zipfile
import zlib

import pytest

from conversations.media.errors import MediaTypeMismatch
from conversations.media.inspect import (
    IMAGE_MIME_TYPES,
    content_type_charset,
    document_extract_text,
    media_check_type,
    media_sniff,
    text_clean,
)

# --- small real files ---------------------------------------------------------------------------------


def png_bytes() -> bytes:
    """A 1x1 RGB PNG."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + checksum

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def gif_bytes() -> bytes:
    """A 1x1 GIF."""
    return (
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
        b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    )


def wav_bytes() -> bytes:
    """0.1 s of 8 kHz 16-bit mono silence."""
    pcm = b"\x00\x00" * 800
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(pcm))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
    )


def mp4_bytes(brand: bytes = b"isom") -> bytes:
    """An ISO media file: an `ftyp` box and an empty `free` box."""
    ftyp = brand + struct.pack(">I", 512) + b"isom" + b"mp41"
    return struct.pack(">I", 8 + len(ftyp)) + b"ftyp" + ftyp + struct.pack(">I", 8) + b"free"


def pdf_bytes(*pages: str) -> bytes:
    """A valid PDF with one page per text, Helvetica, hand-written objects and cross-reference table."""
    pages = pages or ("Hello from the media test",)
    count = len(pages)
    font_id = 3 + 2 * count
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(b"%d 0 R" % (3 + 2 * i) for i in range(count))
        + b"] /Count %d >>" % count,
    ]
    for index, text in enumerate(pages):
        stream = b"BT /F1 12 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET"
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (4 + 2 * index, font_id)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def pdf_mapped_bytes(text: bytes, mapping: dict[int, str]) -> bytes:
    """A one-page PDF whose font's ToUnicode map turns each byte of `text` into the 4-hex-digit UTF-16 unit
    `mapping` gives it: the PDF decides what "text" its glyphs carry, NUL and lone surrogates included."""
    entries = b"".join(b"<%02X> <%s>\n" % (code, unit.encode()) for code, unit in mapping.items())
    cmap = (
        b"/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n/CMapName /T def\n/CMapType 2 def\n"
        b"1 begincodespacerange\n<00> <FF>\nendcodespacerange\n"
        + b"%d beginbfchar\n" % len(mapping)
        + entries
        + b"endbfchar\nendcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
    )
    stream = b"BT /F1 12 Tf 72 720 Td (" + text + b") Tj ET"
    return pdf_from_objects(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 6 0 R >>",
            b"<< /Length %d >>\nstream\n" % len(cmap) + cmap + b"\nendstream",
        ]
    )


def pdf_from_objects(objects: list[bytes]) -> bytes:
    """A PDF of the given objects (numbered from 1, the first the catalog), with its cross-reference table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def pdf_bomb_bytes(*, pages: int = 4, expanded_bytes: int = 8 * 1024 * 1024, operator: bytes = b"0 0 m\n") -> bytes:
    """A small PDF that is slow to read: `pages` pages share one FlateDecode content stream that expands to
    `expanded_bytes` of `operator` (a path move: no text), closed by one empty text object so that pypdf
    cannot tell from a glance that the stream holds no text. 8 MiB compress to about 13 KB; pypdf parses
    the whole stream again for every page (5 s of CPU a page in-process, measured with pypdf 7.1)."""
    content = zlib.compress(operator * (expanded_bytes // len(operator)) + b"BT () Tj ET\n", 9)
    font = b"<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >>"
    return pdf_from_objects(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids ["
            + b" ".join(b"%d 0 R" % (4 + i) for i in range(pages))
            + b"] /Count %d >>" % pages,
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content + b"\nendstream",
            *[b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R /Resources " + font + b" >>"]
            * pages,
        ]
    )


# "A", then NUL, then a lone high surrogate, then "B": what a hostile (or just broken) font map can say.
NUL_PDF_MAPPING = {0x41: "0041", 0x30: "0000", 0x44: "D800", 0x42: "0042"}


def docx_bytes() -> bytes:
    """The skeleton of a .docx: libmagic names it by its first entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("_rels/.rels", "<Relationships/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return buffer.getvalue()


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes/readme.md", "# not an office document")
    return buffer.getvalue()


TEXT = b"Order 1042 arrived damaged.\nPlease send a replacement.\n"
CSV = b"sku,quantity,price\nA-1,2,9.90\nB-7,1,24.00\n"


# --- sniffing and accepted types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "declared_type", "filename"),
    [
        pytest.param(png_bytes(), "IMAGE", "", id="png"),
        pytest.param(gif_bytes(), "IMAGE", "", id="gif"),
        pytest.param(wav_bytes(), "AUDIO", "", id="wav"),
        pytest.param(mp4_bytes(b"M4A "), "AUDIO", "", id="m4a"),  # audio/x-m4a
        pytest.param(mp4_bytes(), "AUDIO", "", id="mp4-audio"),  # video/mp4: an m4a with a generic brand
        pytest.param(mp4_bytes(), "VIDEO", "", id="mp4"),
        pytest.param(pdf_bytes(), "DOCUMENT", "", id="pdf"),
        pytest.param(TEXT, "DOCUMENT", "", id="txt"),
        pytest.param(CSV, "DOCUMENT", "prices.csv", id="csv"),
        pytest.param(docx_bytes(), "DOCUMENT", "letter.docx", id="docx"),
    ],
)
def test_real_files_are_accepted_for_their_type(data, declared_type, filename):
    mime_type = media_sniff(data=data)

    media_check_type(declared_type=declared_type, mime_type=mime_type, filename=filename)


def test_sniff_names_the_files():
    assert media_sniff(data=png_bytes()) == "image/png"
    assert media_sniff(data=wav_bytes()).startswith("audio/")
    assert media_sniff(data=mp4_bytes()) == "video/mp4"
    assert media_sniff(data=pdf_bytes()) == "application/pdf"
    assert media_sniff(data=TEXT) == "text/plain"
    assert media_sniff(data=b"") == "application/x-empty"


@pytest.mark.parametrize(
    ("mime_type", "filename"),
    [
        ("application/zip", "report.docx"),
        ("application/zip", "budget.ODS"),
        ("application/octet-stream", "sheet.xlsx"),  # libmagic's "Microsoft OOXML" without a MIME type
        ("application/CDFV2", "old.doc"),
        ("text/x-c", "notes.txt"),  # libmagic guessing a language for plain text
        ("text/plain; charset=us-ascii", ""),
    ],
)
def test_containers_are_accepted_when_the_file_name_says_which_document(mime_type, filename):
    media_check_type(declared_type="DOCUMENT", mime_type=mime_type, filename=filename)


@pytest.mark.parametrize(
    ("mime_type", "filename"),
    [
        ("application/zip", ""),
        ("application/zip", "archive.zip"),
        ("application/octet-stream", "payload.exe"),
        ("application/octet-stream", ""),
        ("text/x-c", ""),
        ("text/html", ""),
        ("application/x-dosexec", "report.pdf"),
    ],
)
def test_containers_and_other_types_are_refused_as_documents_otherwise(mime_type, filename):
    with pytest.raises(MediaTypeMismatch):
        media_check_type(declared_type="DOCUMENT", mime_type=mime_type, filename=filename)


# --- mismatches ---------------------------------------------------------------------------------------


def test_a_png_declared_as_document_is_refused_with_details():
    # given
    mime_type = media_sniff(data=png_bytes())

    # when
    with pytest.raises(MediaTypeMismatch) as caught:
        media_check_type(
            declared_type="DOCUMENT", mime_type=mime_type, filename="scan.png", field="content.document.url"
        )

    # then
    error = caught.value
    assert error.code == "media_type_mismatch"
    assert error.status_code == 400
    assert error.details["field"] == "content.document.url"
    assert error.details["declaredType"] == "DOCUMENT"
    assert error.details["detectedMimeType"] == "image/png"
    assert "application/pdf" in error.details["allowed"]
    assert "set type to IMAGE" in error.message


def test_a_text_file_declared_as_image_is_refused():
    with pytest.raises(MediaTypeMismatch) as caught:
        media_check_type(declared_type="IMAGE", mime_type=media_sniff(data=TEXT))

    assert caught.value.details["detectedMimeType"] == "text/plain"
    assert caught.value.details["field"] == "type"
    assert "image/png" in caught.value.details["allowed"]
    assert "not accepted for an IMAGE message" in caught.value.message


def test_the_image_refusal_names_every_accepted_image_format():
    with pytest.raises(MediaTypeMismatch) as caught:
        media_check_type(declared_type="IMAGE", mime_type="image/svg+xml")

    # every format accepted (IMAGE_MIME_TYPES, the one list), each once, as an operator would write them
    assert "Send a JPEG, PNG, GIF, WebP, BMP, TIFF, HEIC, HEIF or AVIF image." in caught.value.message
    assert sorted(caught.value.details["allowed"]) == sorted(IMAGE_MIME_TYPES)
    for mime_type in IMAGE_MIME_TYPES:
        media_check_type(declared_type="IMAGE", mime_type=mime_type)  # each one named is accepted


@pytest.mark.parametrize(
    ("declared_type", "phrase"),
    [("IMAGE", "an IMAGE"), ("AUDIO", "an AUDIO"), ("VIDEO", "a VIDEO"), ("DOCUMENT", "a DOCUMENT")],
)
def test_the_refusal_reads_as_english(declared_type, phrase):
    with pytest.raises(MediaTypeMismatch) as caught:
        media_check_type(declared_type=declared_type, mime_type="application/x-executable")
    assert f"not accepted for {phrase} message." in caught.value.message


@pytest.mark.parametrize(
    ("data_or_mime", "declared_type"),
    [
        ("image/svg+xml", "IMAGE"),  # scriptable XML, not a picture
        ("audio/x-wav", "VIDEO"),
        ("image/png", "AUDIO"),
        ("application/pdf", "VIDEO"),
    ],
)
def test_other_mismatches_are_refused(data_or_mime, declared_type):
    with pytest.raises(MediaTypeMismatch):
        media_check_type(declared_type=declared_type, mime_type=data_or_mime)


# --- text extraction ----------------------------------------------------------------------------------


def test_pdf_text_is_extracted():
    text = document_extract_text(data=pdf_bytes("Invoice 1042", "Total 24 EUR"), mime_type="application/pdf")

    assert "Invoice 1042" in text
    assert "Total 24 EUR" in text


def test_pdf_text_is_bounded():
    text = document_extract_text(data=pdf_bytes("A" * 80, "B" * 80), mime_type="application/pdf", limit_chars=50)

    assert text == "A" * 50


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"%PDF-1.4\n garbage without objects", id="garbage"),
        pytest.param(pdf_bytes()[:60], id="truncated"),
        pytest.param(
            b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 1 0 R >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF",
            id="self-referencing-pages",
        ),
        pytest.param(png_bytes(), id="not-a-pdf"),
    ],
)
def test_a_broken_pdf_gives_no_text_and_no_error(data):
    assert document_extract_text(data=data, mime_type="application/pdf") == ""


def test_plain_text_and_csv_are_decoded_and_bounded():
    assert document_extract_text(data=CSV, mime_type="text/csv") == CSV.decode()
    assert document_extract_text(data=b"\xef\xbb\xbfhello", mime_type="text/plain") == "hello"
    assert document_extract_text(data=b"x" * 100_000, mime_type="text/plain", limit_chars=10) == "x" * 10


UNICODE_TEXT = "Pedido 1042: caf\u00e9, \u0436\u0443\u043a, \u6771\u4eac, \U0001f600\n"


@pytest.mark.parametrize(
    ("data", "charset"),
    [
        pytest.param(UNICODE_TEXT.encode("utf-8"), "", id="utf-8"),
        pytest.param(codecs.BOM_UTF8 + UNICODE_TEXT.encode("utf-8"), "", id="utf-8-bom"),
        pytest.param(codecs.BOM_UTF16_LE + UNICODE_TEXT.encode("utf-16-le"), "", id="utf-16-le-bom"),
        pytest.param(codecs.BOM_UTF16_BE + UNICODE_TEXT.encode("utf-16-be"), "", id="utf-16-be-bom"),
        pytest.param(codecs.BOM_UTF32_LE + UNICODE_TEXT.encode("utf-32-le"), "", id="utf-32-le-bom"),
        pytest.param(UNICODE_TEXT.encode("utf-16-be"), "UTF-16BE", id="declared-utf-16be"),
        pytest.param(codecs.BOM_UTF16_LE + UNICODE_TEXT.encode("utf-16-le"), "iso-8859-1", id="bom-beats-label"),
        pytest.param(UNICODE_TEXT.encode("gb18030"), "GB18030", id="declared-gb18030"),
    ],
)
def test_text_documents_are_decoded_by_their_mark_or_charset(data, charset):
    assert document_extract_text(data=data, mime_type="text/plain", charset=charset) == UNICODE_TEXT


@pytest.mark.parametrize(
    ("data", "charset", "expected"),
    [
        pytest.param(b"caf\xe9 ok", "", "caf\u00e9 ok", id="not-utf-8-is-windows-1252"),
        pytest.param(b"caf\xe9 ok", "no-such-charset", "caf\u00e9 ok", id="unknown-charset"),
        pytest.param(b"hello", "rot13", "hello", id="a-codec-that-is-no-charset"),
        pytest.param(b"xn--caf-dma", "punycode", "xn--caf-dma", id="punycode-is-no-charset"),
        pytest.param(b"a\x00b\x00", "", "ab", id="nul-bytes"),
        pytest.param(b"+2AA-ok", "utf-7", "\ufffdok", id="a-lone-surrogate-from-utf-7"),
        pytest.param(codecs.BOM_UTF16_LE + b"a\x00\x00\xd8b\x00", "", "a\ufffdb", id="utf-16-lone-surrogate"),
        pytest.param(codecs.BOM_UTF16_LE + b"a\x00b", "", "a\ufffd", id="utf-16-odd-length"),
    ],
)
def test_text_decoding_never_fails_and_the_text_is_storable(data, charset, expected):
    text = document_extract_text(data=data, mime_type="text/plain", charset=charset)

    assert text == expected
    text.encode("utf-8")  # a lone surrogate would raise here (and in the database driver)


def test_a_bounded_utf_16_head_is_cut_between_characters():
    data = codecs.BOM_UTF16_LE + ("\u00e9" * 100).encode("utf-16-le")

    assert document_extract_text(data=data, mime_type="text/plain", limit_chars=7) == "\u00e9" * 7


def test_pdf_text_without_nul_and_lone_surrogates():
    text = document_extract_text(data=pdf_mapped_bytes(b"A0DB", NUL_PDF_MAPPING), mime_type="application/pdf")

    assert text == "A\ufffdB"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain", "plain"),
        ("a\x00b", "ab"),
        ("a\ud800b", "a\ufffdb"),
        ("\udfffa", "\ufffda"),
        ("\ud83d\ude00", "\U0001f600"),  # a pair written as two code points is one character
    ],
)
def test_text_clean_keeps_only_what_postgresql_stores(raw, clean):
    assert text_clean(raw) == clean


@pytest.mark.parametrize(
    ("content_type", "charset"),
    [
        ("text/plain; charset=UTF-16", "UTF-16"),
        ('text/csv;charset="utf-8"', "utf-8"),
        ("text/plain; format=flowed; Charset=koi8-r", "koi8-r"),
        ("text/plain", ""),
        ("", ""),
    ],
)
def test_the_declared_charset_is_read_from_the_content_type(content_type, charset):
    assert content_type_charset(content_type) == charset


def test_office_documents_give_no_text():
    mime_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

    assert document_extract_text(data=docx_bytes(), mime_type=mime_type) == ""
