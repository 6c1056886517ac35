"""The child process that reads a PDF's text. Run by conversations/media/extract.py as a script (the app
imports it only for its path and exit statuses).

    python -I pdf_text_child.py '{"maxPages": 50, "maxChars": 20000, "cpuSeconds": 3, "memoryBytes": 268435456}'
    < file.pdf

It limits itself first (CPU seconds, address space, no core file), then reads the PDF from stdin and writes
each page's text as one JSON string per line on stdout as soon as the page is read, so a parent that kills
it at a limit keeps the pages read before. It imports only the standard library and pypdf: no Django, no
settings, and the parent gives it an empty environment, so a parser bug reached by a hostile file finds no
secret here.

Exit status: 0 read to the end (or to the character limit; an unreadable PDF is a PDF without text),
EXIT_MEMORY out of its address space, EXIT_USAGE bad arguments; killed by SIGXCPU at the CPU limit.
"""

import io
import json
import resource
import sys
from typing import BinaryIO

EXIT_USAGE = 2
EXIT_MEMORY = 3

# pypdf's own limits, tighter than its defaults (75 MB per decoded stream, 2,000,000 tokens per content
# stream, where one page of a text PDF is a few KB and a few thousand tokens). They stop one huge stream
# early; the CPU and memory limits bound everything else, many streams or many pages included.
PYPDF_LIMITS = {
    "zlib_maximum_output_length": 16 * 1024 * 1024,
    "lzw_maximum_output_length": 16 * 1024 * 1024,
    "run_length_maximum_output_length": 16 * 1024 * 1024,
    "array_based_stream_maximum_output_length": 16 * 1024 * 1024,
    "stream_decoding_work_maximum_length": 64 * 1024 * 1024,
    # About 0.6 s of parsing: a dense page of text is well under 100,000 tokens.
    "stream_parsing_work_maximum_count": 250_000,
    "xform_maximum_invocations_per_extraction": 1_000,
    "jbig2dec_binary": None,  # text extraction never needs it, and this process starts no other program
}


def _limit_self(*, cpu_seconds: int, memory_bytes: int) -> None:
    """The kernel's hard limits for this process: SIGXCPU after `cpu_seconds` of CPU (SIGKILL one second
    later if it is ignored), MemoryError past `memory_bytes` of address space, and no core file."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    except (ValueError, OSError):  # some kernels (macOS) refuse RLIMIT_AS; the CPU limit still holds
        pass


def _configure_pypdf() -> None:
    import pypdf

    overwrite = getattr(pypdf, "overwrite_configuration", None)  # pypdf 7; older versions keep their defaults
    if overwrite is None:
        return
    known = {name for name in getattr(pypdf.Configuration, "__dataclass_fields__", {})}
    overwrite(**{name: value for name, value in PYPDF_LIMITS.items() if name in known})


def _pages_text(*, data: bytes, max_pages: int, max_chars: int, out: BinaryIO) -> None:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            return  # needs a password we do not have
        pages = min(len(reader.pages), max_pages)
    except MemoryError:
        raise
    except Exception:  # pypdf raises many types on malformed files; a broken PDF is one without text
        return
    written = 0
    for index in range(pages):
        try:
            text = (reader.pages[index].extract_text() or "").strip()
        except MemoryError:
            raise
        except Exception:  # one broken page must not hide the others
            continue
        if not text:
            continue
        text = text[: max_chars - written]
        out.write(json.dumps(text).encode("ascii") + b"\n")
        out.flush()
        written += len(text)
        if written >= max_chars:
            return


def main(argv: list[str]) -> int:
    try:
        limits = json.loads(argv[1])
        max_pages, max_chars = int(limits["maxPages"]), int(limits["maxChars"])
        cpu_seconds, memory_bytes = int(limits["cpuSeconds"]), int(limits["memoryBytes"])
    except (IndexError, KeyError, TypeError, ValueError):
        return EXIT_USAGE
    _limit_self(cpu_seconds=cpu_seconds, memory_bytes=memory_bytes)
    try:
        data = sys.stdin.buffer.read()
        _configure_pypdf()
        _pages_text(data=data, max_pages=max_pages, max_chars=max_chars, out=sys.stdout.buffer)
    except MemoryError:
        return EXIT_MEMORY
    return 0


if __name__ == "__main__":
    import logging

    logging.disable(logging.CRITICAL)  # pypdf warns about every oddity of a broken file; nobody reads them
    sys.exit(main(sys.argv))
