"""Cost of reading a PDF bomb's text: wall time, this process's CPU, the extraction children's CPU.

    DJANGO_SETTINGS_MODULE=config.settings.test .venv/bin/python bench/pdf_bomb.py [PAGES] [MIB]

Builds the bomb of tests/conversations/test_media_inspect.py (PAGES pages sharing one FlateDecode content
stream that expands to MIB MiB of path operators: no text) and calls document_extract_text on it once, as
the media pipeline does. Loopback only; nothing is stored.
"""

import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

import django

django.setup()

from conversations.media.inspect import document_extract_text  # noqa: E402
from tests.conversations.test_media_inspect import pdf_bomb_bytes  # noqa: E402


def main() -> None:
    pages = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    mib = float(sys.argv[2]) if len(sys.argv) > 2 else 8.0
    data = pdf_bomb_bytes(pages=pages, expanded_bytes=int(mib * 1024 * 1024))
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    text = document_extract_text(data=data, mime_type="application/pdf")
    wall = time.monotonic() - started
    own_after, children_after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own_after.ru_utime + own_after.ru_stime - own.ru_utime - own.ru_stime
    child_cpu = children_after.ru_utime + children_after.ru_stime - children.ru_utime - children.ru_stime
    print(
        f"{len(data)} bytes, {pages} pages x {mib:g} MiB: wall {wall:.2f} s, this process {cpu:.2f} s CPU "
        f"(max RSS {own_after.ru_maxrss // 1024} MiB), children {child_cpu:.2f} s CPU "
        f"(max RSS {children_after.ru_maxrss // 1024} MiB), {len(text)} characters of text"
    )


if __name__ == "__main__":
    main()
