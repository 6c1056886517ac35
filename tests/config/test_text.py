"""config/text.py: the one byte-count formatter (the agents' media descriptions, the media size limit's message)."""

import pytest

from config.text import human_size


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, ""), (512, "512 B"), (12 * 1024 + 100, "12 KB"), (1536 * 1024, "1.5 MB"), (10 * 1024 * 1024, "10.0 MB")],
)
def test_human_size(size, text):
    assert human_size(size) == text
