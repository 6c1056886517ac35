"""pdf_text_extract: a PDF's text read in a child process under hard limits (CPU, memory, wall time, slots),
and a gevent worker's other greenlets running while it reads. No database.

The bombs are built here (tests/conversations/test_media_inspect.py, pdf_bomb_bytes): 13 KB files whose pages
share one FlateDecode content stream of 8 MiB of path operators, which cost pypdf 5 s of CPU a page when it
ran in the request's own greenlet.
"""

import json
import os
import resource
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from conversations.media import extract
from conversations.media.extract import pdf_text_extract
from tests.conversations.test_media_inspect import pdf_bomb_bytes, pdf_bytes, pdf_from_objects

REPOSITORY = Path(__file__).resolve().parents[2]


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def text_then_bomb_pdf() -> bytes:
    """Two pages of text, then four pages that share one 8 MiB stream of path operators."""
    bomb = zlib.compress(b"0 0 m\n" * (8 * 1024 * 1024 // 6) + b"BT () Tj ET\n", 9)
    resources = b"/Resources << /Font << /F1 3 0 R >> >>"
    page_ids = [5, 6, 7, 8, 9, 10]
    texts = [b"BT /F1 12 Tf 72 720 Td (Invoice 1042) Tj ET", b"BT /F1 12 Tf 72 720 Td (Total 99 EUR) Tj ET"]
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % i for i in page_ids) + b"] /Count 6 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(bomb) + bomb + b"\nendstream",
    ]
    objects += [
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R %s >>" % (11 + i, resources)
        for i in range(2)
    ]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R %s >>" % resources] * 4
    objects += [b"<< /Length %d >>\nstream\n" % len(text) + text + b"\nendstream" for text in texts]
    return pdf_from_objects(objects)


@pytest.fixture
def fast_limits(settings):
    """Limits a bomb reaches within a second or two, so the tests stay short."""
    settings.MEDIA_EXTRACT_CPU_SECONDS = 1
    settings.MEDIA_EXTRACT_TIMEOUT_SECONDS = 30.0
    return settings


def test_a_pdf_bomb_is_stopped_at_the_cpu_limit_in_a_child_process(fast_limits):
    # given
    data = pdf_bomb_bytes(pages=50)
    own_before, children_before = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)

    # when
    result = pdf_text_extract(data=data, max_pages=50, limit_chars=20_000)

    # then: the child spent the CPU and was stopped at its limit; this process only waited
    own = cpu_seconds(resource.RUSAGE_SELF) - own_before
    children = cpu_seconds(resource.RUSAGE_CHILDREN) - children_before
    assert (result.text, result.stopped) == ("", "cpu")
    assert children > own
    assert own < 1.0  # in-process, 50 pages cost pypdf minutes
    assert children < 3 * fast_limits.MEDIA_EXTRACT_CPU_SECONDS


def test_the_pages_read_before_a_limit_are_kept(fast_limits):
    result = pdf_text_extract(data=text_then_bomb_pdf(), max_pages=50, limit_chars=20_000)

    assert result.stopped == "cpu"
    assert result.text == "Invoice 1042\n\nTotal 99 EUR"
    assert result.pages == 2


def test_a_pdf_past_the_memory_limit_is_stopped(settings):
    # given: room for Python and pypdf, not for a 15 MiB decoded stream
    settings.MEDIA_EXTRACT_MEMORY_BYTES = 64 * 1024 * 1024

    # when
    result = pdf_text_extract(
        data=pdf_bomb_bytes(pages=2, expanded_bytes=15 * 1024 * 1024), max_pages=50, limit_chars=100
    )

    # then
    assert (result.text, result.stopped) == ("", "memory")


def test_a_child_past_the_wall_deadline_is_killed(settings):
    settings.MEDIA_EXTRACT_CPU_SECONDS = 60
    settings.MEDIA_EXTRACT_TIMEOUT_SECONDS = 0.5
    started = time.monotonic()

    result = pdf_text_extract(data=pdf_bomb_bytes(pages=50), max_pages=50, limit_chars=100)

    assert (result.text, result.stopped) == ("", "timeout")
    assert time.monotonic() - started < 30  # the 50 pages would take a minute: the child was killed


def test_no_free_slot_before_the_deadline_gives_no_text(settings, monkeypatch):
    # given: the process's only slot is taken
    settings.MEDIA_EXTRACT_TIMEOUT_SECONDS = 0.2
    slots = threading.BoundedSemaphore(1)
    monkeypatch.setattr(extract, "_slots", slots)
    slots.acquire()

    # when
    result = pdf_text_extract(data=pdf_bytes("Invoice 1042"), max_pages=50, limit_chars=100)

    # then
    assert (result.text, result.stopped) == ("", "busy")
    slots.release()
    settings.MEDIA_EXTRACT_TIMEOUT_SECONDS = 30.0  # time for a child to start on a busy machine
    assert pdf_text_extract(data=pdf_bytes("Invoice 1042"), max_pages=50, limit_chars=100).text == "Invoice 1042"


def test_the_child_runs_isolated_with_no_environment(monkeypatch):
    # given: a secret in this process's environment
    monkeypatch.setenv("LLM_API_KEY", "sk-secret-of-the-parent")
    seen = {}
    original = subprocess.Popen

    def spy(args, **kwargs):
        seen.update(args=args, env=kwargs.get("env"))
        return original(args, **kwargs)

    monkeypatch.setattr(extract.subprocess, "Popen", spy)

    # when
    result = pdf_text_extract(data=pdf_bytes("Invoice 1042"), max_pages=50, limit_chars=100)

    # then
    assert result.text == "Invoice 1042"
    assert seen["env"] == {}
    assert seen["args"][:3] == [sys.executable, "-I", extract.CHILD_SCRIPT]


_GEVENT_WORKER = """
from gevent import monkey

monkey.patch_all()  # what gunicorn's gevent worker does before it loads the app

import json, time

import django

django.setup()
import gevent
from django.conf import settings

settings.MEDIA_EXTRACT_CPU_SECONDS = 1
from conversations.media.inspect import document_extract_text
from tests.conversations.test_media_inspect import pdf_bomb_bytes

data = pdf_bomb_bytes(pages=8)
ticks = []


def other_request():
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.01)


ticker = gevent.spawn(other_request)
gevent.sleep(0.05)
started = time.monotonic()
text = gevent.spawn(document_extract_text, data=data, mime_type="application/pdf").get()
ended = time.monotonic()
ticker.kill()
during = [tick for tick in ticks if started <= tick <= ended]
gaps = [b - a for a, b in zip([started, *during], [*during, ended])]
print(json.dumps({"text": text, "ticks": len(during), "longestPause": max(gaps), "seconds": ended - started}))
"""


def test_other_greenlets_keep_running_while_a_pdf_bomb_is_read():
    # given: a gevent process like a gunicorn worker, with a greenlet that stands for the other requests

    # when: a greenlet reads the bomb's text
    done = subprocess.run(
        [sys.executable, "-c", _GEVENT_WORKER],
        cwd=REPOSITORY,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        capture_output=True,
        timeout=120,
        check=True,
    )

    # then: the other greenlet ran all along (in-process, pypdf held the whole process for 5 s a page)
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["text"] == ""
    assert seen["ticks"] >= 10
    assert seen["longestPause"] < 2.5, seen
