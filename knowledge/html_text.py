"""An HTML page reduced to its readable text, as Markdown-ish lines the chunker splits (knowledge/chunking.py):
headings become `#` lines, list items `- ` lines, blocks end with a blank line. Scripts, styles and other
content no reader sees are left out.

The standard library's HTMLParser: not recursive (a million nested tags cost what a million flat ones do),
entities expanded once (no entity bomb: HTML has no user-defined entities), and the output bounded."""

import re
import time
from html.parser import HTMLParser

# Not read: what no reader sees, and navigation menus (the same links on every page of a site).
_HIDDEN = frozenset("script style noscript template svg math head iframe object canvas select button nav".split())
_BLOCKS = frozenset(
    "p div section article main aside header footer blockquote pre table tr br hr form fieldset "
    "dl dt dd figure figcaption address ul ol details summary".split()
)
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
PARSE_SECONDS = 3.0  # a real page of 10 MB parses in about 1 s
_SLICE_CHARS = 32 * 1024
_BLANK_LINES = re.compile(r"\n{3,}")
_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())


class _Reader(HTMLParser):
    def __init__(self, limit_chars: int) -> None:
        super().__init__(convert_charrefs=True)
        self.limit_chars = limit_chars
        self.size = 0
        self.parts: list[str] = []
        self.hidden = 0  # depth inside hidden elements
        self.title: list[str] = []
        self.in_title = False

    def _emit(self, text: str) -> None:
        if self.size < self.limit_chars:
            text = text[: self.limit_chars - self.size]
            self.parts.append(text)
            self.size += len(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        if tag in _HIDDEN:
            if tag not in _VOID:
                self.hidden += 1
            return
        if self.hidden:
            return
        if tag in _HEADINGS:
            self._emit("\n\n" + "#" * _HEADINGS[tag] + " ")
        elif tag == "li":
            self._emit("\n- ")
        elif tag in _BLOCKS or tag in ("td", "th"):
            self._emit("\n\n" if tag in _BLOCKS else " ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
            return
        if self.hidden:
            return
        if tag in _HEADINGS or tag in _BLOCKS or tag == "li":
            self._emit("\n\n" if tag != "li" else "\n")

    def handle_data(self, data: str) -> None:
        if self.in_title and len(self.title) < 50:
            self.title.append(data)
        if not self.hidden:
            # One line per block: newlines inside a paragraph are its source's wrapping, not structure.
            self._emit(" ".join(data.split()) + (" " if data[-1:].isspace() else ""))


def html_text(html: str, *, limit_chars: int, seconds: float = PARSE_SECONDS) -> tuple[str, str]:
    """(the page's readable text at most `limit_chars` long, its <title>). The parser is fed a slice at a
    time and stops after `seconds`: a page of a million tags costs Python about 10 us each, and what was
    read by then is kept. Between slices the thread yields (a greenlet under gevent lets the others run)."""
    reader = _Reader(limit_chars)
    deadline = time.monotonic() + seconds
    try:
        for start in range(0, len(html), _SLICE_CHARS):
            reader.feed(html[start : start + _SLICE_CHARS])
            if time.monotonic() > deadline or reader.size >= limit_chars:
                break  # not closed: a tag cut at the slice's end must not come out as text
            time.sleep(0)
        else:
            reader.close()
    except AssertionError:  # HTMLParser's own check on a malformed declaration: keep what was read
        pass
    lines = [line.strip() for line in "".join(reader.parts).split("\n")]
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines))
    return text.strip(), " ".join("".join(reader.title).split())[:500]
