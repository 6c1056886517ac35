"""A document's text split into passages at its structure: Markdown headings (`#` to `######`), paragraphs
(blank lines) and list items. Consecutive blocks under the same headings are packed into one passage of at
most PASSAGE_MAX_CHARS; a block longer than that is cut at sentence ends, else at spaces, else anywhere.
Each passage keeps the path of headings above it, so it stands on its own when an agent reads it.

Linear in the text's length (one pass over its lines; no backtracking regular expression), whatever the
text holds: a megabyte of one word, ten thousand headings, NUL characters (gone before: text_clean)."""

import re
from dataclasses import dataclass

PASSAGE_MAX_CHARS = 1200  # about 200 words: four of them fit an agent's default knowledge_max_chars (6000)
PASSAGE_TARGET_CHARS = 800  # blocks under the same headings are packed together until a passage has this much
HEADING_MAX_CHARS = 300  # of the joined path
_HEADING = re.compile(r"#{1,6}[ \t]+\S")
_LIST_ITEM = re.compile(r"(?:[-*+]|\d{1,9}[.)])[ \t]+\S")
_SENTENCE_END = re.compile(r"[.!?][)\"'\u201d\u2019]?\s")
# Words that hold a digit: order numbers, codes, SKUs ("ORD-99812", "A1234", "#5521"); with the pieces
# between their separators that hold one too ("ORD-99812" -> "ord-99812", "99812").
_CODE = re.compile(r"[0-9A-Za-z][0-9A-Za-z_./#-]{0,98}[0-9A-Za-z]|[0-9]")
_CODE_PART = re.compile(r"[0-9A-Za-z]+")
_WORD = re.compile(r"\w")  # a passage without one has nothing to find


@dataclass(frozen=True)
class Chunk:
    heading: str
    text: str


def codes_of(text: str) -> list[str]:
    """The exact tokens of `text` that hold a digit, lower-cased, each once, in order of appearance."""
    found: dict[str, None] = {}
    for match in _CODE.finditer(text):
        word = match.group().lower()
        if not any(char.isdigit() for char in word):
            continue
        found[word] = None
        for part in _CODE_PART.findall(word):
            if part != word and any(char.isdigit() for char in part) and len(part) >= 2:
                found[part] = None
    return list(found)


def chunks_split(text: str) -> list[Chunk]:
    """The passages of a (clean) text, in order."""
    chunks: list[Chunk] = []
    headings: list[tuple[int, str]] = []  # (level, title), outermost first
    blocks: list[str] = []  # the current section's blocks
    block: list[str] = []  # the current block's lines

    def end_block() -> None:
        if block:
            joined = " ".join(line.strip() for line in block).strip()
            if joined:
                blocks.append(joined)
            block.clear()

    def end_section() -> None:
        end_block()
        if blocks:
            path = " > ".join(title for _, title in headings)[:HEADING_MAX_CHARS]
            chunks.extend(Chunk(heading=path, text=piece) for piece in _pack(blocks) if _WORD.search(piece))
            blocks.clear()

    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            end_block()
        elif _HEADING.match(line):
            end_section()
            level = len(line) - len(line.lstrip("#"))
            title = line[level:].strip().rstrip("#").strip()
            headings[:] = [entry for entry in headings if entry[0] < level]
            headings.append((level, title[:HEADING_MAX_CHARS]))
        elif _LIST_ITEM.match(line):
            end_block()
            block.append(line)
        else:
            block.append(line)
    end_section()
    return chunks


def _pack(blocks: list[str]) -> list[str]:
    """Blocks joined by blank lines into pieces of at most PASSAGE_MAX_CHARS; a block too long alone is cut."""
    pieces: list[str] = []
    current = ""
    for block in blocks:
        for part in _cut(block):
            if current and (len(current) >= PASSAGE_TARGET_CHARS or len(current) + 2 + len(part) > PASSAGE_MAX_CHARS):
                pieces.append(current)
                current = part
            else:
                current = f"{current}\n\n{part}" if current else part
    if current:
        pieces.append(current)
    return pieces


def _cut(block: str) -> list[str]:
    """`block` in pieces of at most PASSAGE_MAX_CHARS: at the last sentence end before the limit, else the
    last space, else at the limit itself (a megabyte of one word)."""
    parts = []
    while len(block) > PASSAGE_MAX_CHARS:
        window = block[: PASSAGE_MAX_CHARS + 1]
        end = max((match.end() for match in _SENTENCE_END.finditer(window)), default=0)
        if end < PASSAGE_MAX_CHARS // 2:
            end = window.rfind(" ") + 1
        if end < PASSAGE_MAX_CHARS // 2:
            end = PASSAGE_MAX_CHARS
        parts.append(block[:end].strip())
        block = block[end:].strip()
    if block:
        parts.append(block)
    return parts
