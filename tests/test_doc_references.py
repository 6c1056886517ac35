"""Every place the code points at the documentation resolves: a `docs/<file>.md` exists, and a section it or
the README is cited by, `docs/architecture.md, "Row locks"` or `README "Layout"`, is one of that file's
sections: a heading, or a paragraph's bold run-in title (`**Rate limits.**`)."""

import re
from pathlib import Path

from django.conf import settings

BASE = Path(settings.BASE_DIR)
# A file, then (after a comma, maybe a line break and a comment's `#`) a quoted section name.
CITATION = re.compile(r'(?<![\w/])(README(?:\.md)?|docs/[\w/-]+\.md)\b(?:,?\s*(?:#\s*)?"([^"\n]+)")?')
SKIPPED = {".venv", ".tools", "node_modules", "var", ".git"}
THIS_FILE = Path(__file__).resolve()


def python_files() -> list[Path]:
    return sorted(
        path
        for path in BASE.rglob("*.py")
        if not SKIPPED & set(path.relative_to(BASE).parts[:-1]) and path.resolve() != THIS_FILE
    )


def sections(markdown: Path) -> set[str]:
    """The file's section names: its Markdown headings' text (without the #s), and the bold titles that open
    a paragraph or a list item (`**Rate limits.** Each key ...`, `**Rotating a key**: ...`)."""
    text = markdown.read_text()
    headings = {match[1].strip() for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.MULTILINE)}
    titles = {match[1].rstrip(".:") for match in re.finditer(r"^(?:- )?\*\*([^*\n]+)\*\*", text, re.MULTILINE)}
    return headings | titles


def citations() -> list[tuple[str, str, str | None]]:
    """(where, file, section or None) for every citation of the README or a docs/ file in the Python sources."""
    found = []
    for path in python_files():
        text = path.read_text()
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(BASE)}:{line}", match[1], match[2]))
    return found


def test_every_documentation_reference_in_the_code_resolves():
    cited = citations()
    assert len([c for c in cited if c[2]]) > 20  # the scan finds the code's citations at all
    broken = []
    for where, name, section in cited:
        markdown = BASE / ("README.md" if name in ("README", "README.md") else name)
        if not markdown.exists():
            broken.append(f"{where}: {name} does not exist")
        elif section is not None and section not in sections(markdown):
            broken.append(f'{where}: {name} has no section "{section}"')
    assert broken == []


def test_the_scan_finds_a_citation_across_a_comment_line_break_and_tells_a_missing_section():
    sample = '# see docs/architecture.md,\n# "No such section" and README "Layout", not bench/RESULTS.md "x"'
    found = [(m[1], m[2]) for m in CITATION.finditer(sample)]
    assert found == [("docs/architecture.md", "No such section"), ("README", "Layout")]
    assert "No such section" not in sections(BASE / "docs/architecture.md")
    assert {"Layout", "Rate limits"} <= sections(BASE / "README.md")
