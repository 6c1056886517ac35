"""A PDF's text, read in a child process with hard limits: a hostile file costs bounded CPU, memory and time,
and never blocks the other requests of the worker.

Why a child process: gunicorn runs gevent workers (config/gunicorn.py), where CPU work in one request's
greenlet stops every other request of the process until it ends, and pypdf is pure Python: a 13 KB PDF
whose pages share one compressed content stream of 8 MiB costs it 5 s of CPU a page. The child
(pdf_text_child.py) limits itself with setrlimit (RLIMIT_CPU, RLIMIT_AS) before it reads a byte, and is
waited for with a wall deadline through `subprocess`, which gevent's monkey-patching makes cooperative: the
worker's other greenlets run while the child parses. The settings (README "Media"):

- MEDIA_EXTRACT_CPU_SECONDS: the child's CPU limit (SIGXCPU);
- MEDIA_EXTRACT_MEMORY_BYTES: the child's address space;
- MEDIA_EXTRACT_TIMEOUT_SECONDS: the wall deadline, waiting for a slot included; the child is killed then;
- MEDIA_EXTRACT_CONCURRENCY: children per process at once (memory is at most this many times the limit).

A limit that stops the child keeps the pages read before it (the child writes each page as it goes).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from conversations.media import pdf_text_child

logger = logging.getLogger(__name__)

CHILD_SCRIPT = str(Path(pdf_text_child.__file__).resolve())

_slots: threading.BoundedSemaphore | None = None
_slots_lock = threading.Lock()


@dataclass(frozen=True)
class PdfText:
    text: str  # the pages read, joined by blank lines, at most the limit asked for; not yet text_clean'ed
    # "" when the child read what it was asked to; else why it stopped: "cpu", "memory", "timeout" (the wall
    # deadline), "busy" (no slot came free before the deadline), "failed" (the child could not run or crashed)
    stopped: str = ""
    pages: int = 0  # pages with text


def pdf_text_extract(*, data: bytes, max_pages: int, limit_chars: int) -> PdfText:
    """The text of the first `max_pages` pages of the PDF `data`, at most `limit_chars` characters.

    Runs pypdf in a child process under the MEDIA_EXTRACT_* limits; blocks only the calling greenlet or
    thread. Never raises on the file's content: a limit reached or a crash gives what was read before it.
    """
    timeout = float(settings.MEDIA_EXTRACT_TIMEOUT_SECONDS)
    deadline = time.monotonic() + timeout
    slots = _slots_get()
    if not slots.acquire(timeout=timeout):
        return _stopped(PdfText(text="", stopped="busy"))
    try:
        return _stopped(_run_child(data=data, max_pages=max_pages, limit_chars=limit_chars, deadline=deadline))
    finally:
        slots.release()


def _run_child(*, data: bytes, max_pages: int, limit_chars: int, deadline: float) -> PdfText:
    limits = {
        "maxPages": max_pages,
        "maxChars": limit_chars,
        "cpuSeconds": max(1, int(settings.MEDIA_EXTRACT_CPU_SECONDS)),
        "memoryBytes": int(settings.MEDIA_EXTRACT_MEMORY_BYTES),
    }
    try:
        child = subprocess.Popen(
            # -I: no PYTHON* variables, no user site-packages, not the script's folder on sys.path.
            [sys.executable, "-I", CHILD_SCRIPT, json.dumps(limits)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={},  # nothing of ours (keys, database URL) reaches the process that parses the file
        )
    except OSError:
        logger.warning("could not start the PDF text child process", exc_info=True)
        return PdfText(text="", stopped="failed")
    timed_out = False
    try:
        output, _ = child.communicate(input=data, timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        timed_out = True
        child.kill()
        output, _ = child.communicate()
    pages = _complete_pages(output)
    text = "\n\n".join(pages)[:limit_chars]
    if timed_out:
        stopped = "timeout"
    elif child.returncode == 0:
        stopped = ""
    elif child.returncode == pdf_text_child.EXIT_MEMORY:
        stopped = "memory"
    elif child.returncode in (-signal.SIGXCPU, -signal.SIGKILL):  # the soft limit, or the hard one after it
        stopped = "cpu"
    else:
        stopped = "failed"
    return PdfText(text=text, stopped=stopped, pages=len(pages))


def _complete_pages(output: bytes) -> list[str]:
    """The pages the child finished writing: one JSON string per line; a line cut by a kill is left out."""
    pages = []
    for line in output.split(b"\n"):
        try:
            page = json.loads(line)
        except ValueError:
            continue
        if isinstance(page, str):
            pages.append(page)
    return pages


def _stopped(result: PdfText) -> PdfText:
    if result.stopped:
        logger.warning(
            "PDF text extraction stopped (%s) after %s pages with text; the agent gets the pages read before",
            result.stopped,
            result.pages,
        )
    return result


def _slots_get() -> threading.BoundedSemaphore:
    """The process's slots for child processes, made on first use: under gevent that is after the
    monkey-patching, so waiting for a slot yields to the other greenlets."""
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(max(1, int(settings.MEDIA_EXTRACT_CONCURRENCY)))
        return _slots
