"""SSRF-safe download of a media URL that an integrator sent.

Built on requests + requests-hardened, in three modules by concern: the address policy and the host name's
resolution (addresses.py), the guarded session whose connections go to the checked address and end at one
deadline (transport.py), and here the download itself, hop by hop, with its errors translated into the
media errors. The adapter resolves the host name once, checks every address it resolves to, then connects
to the checked address (the Host header, TLS SNI and the certificate check keep the name), so a DNS answer
that changes between the check and the connection (rebinding) cannot move it. Redirects are followed here,
one hop at a time, each through the same checks.

Webhook deliveries (webhooks/delivery.py) go through the same checks and session, with their own allow
list (`allow_setting="WEBHOOK_ALLOW_PRIVATE_HOSTS"`) and no redirects at all.

No database access: the caller runs it outside any transaction (docs/architecture.md, "The three phases": Think).
"""

from __future__ import annotations

import hashlib
import http.client
import time
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import NoReturn
from urllib.parse import urljoin

import requests
import urllib3
from django.conf import settings

from config.text import ascii_digits, human_size

from .addresses import _AddressRefused, _check_url, _NameNotResolved
from .addresses import address_is_public as address_is_public  # importable from here too (the tests use it)
from .addresses import host_resolve_checked as host_resolve_checked
from .errors import MediaTooLarge, MediaUnreachable, MediaUrlNotAllowed
from .transport import _DeadlineGuard, _session

MAX_REDIRECTS = 3  # enough for http→https and a CDN hop; each hop costs a resolution and a connection
CHUNK_BYTES = 64 * 1024  # one read; the deadline and the size limit are checked between reads
REQUEST_HEADERS = {
    "Accept": "*/*",
    # The size limit counts the bytes we keep; a compressed body is still decoded (and counted) if a
    # server sends one anyway, but asking for identity keeps decompression work off the common path.
    "Accept-Encoding": "identity",
}


@dataclass(frozen=True)
class DownloadedMedia:
    url: str  # as the integrator sent it
    final_url: str  # after redirects
    data: bytes = dataclass_field(repr=False)
    size: int
    sha256: str  # hex
    content_type: str  # the server's Content-Type header, "" when absent; never trusted for the type check
    elapsed: float  # seconds, resolution to last byte


# --- the service --------------------------------------------------------------------------------------


def media_download(*, url: str, field: str = "url") -> DownloadedMedia:
    """Download `url` into memory under settings.MEDIA_MAX_BYTES and MEDIA_DOWNLOAD_TIMEOUT_SECONDS.

    Safe for any URL a client sends: http(s) only, no credentials, public addresses only (checked on
    every redirect), no proxy. The timeout covers the whole download, connection and every read.
    `field` names the request field that carried the URL (e.g. "content.image.url") in error details.
    Raises MediaUrlNotAllowed, MediaUnreachable or MediaTooLarge.
    """
    timeout = float(settings.MEDIA_DOWNLOAD_TIMEOUT_SECONDS)
    max_bytes = int(settings.MEDIA_MAX_BYTES)
    started = time.monotonic()
    deadline = started + timeout
    current = url
    with _session(timeout=timeout) as session, _DeadlineGuard(deadline=deadline) as guard:
        try:
            redirects = 0
            while True:
                _check_url(url=current, field=field)
                remaining = _remaining(deadline=deadline, timeout=timeout, field=field)
                response = session.get(
                    current, stream=True, allow_redirects=False, timeout=(remaining, remaining), headers=REQUEST_HEADERS
                )
                target = session.get_redirect_target(response)
                if target is None:
                    break
                response.close()
                if redirects == MAX_REDIRECTS:
                    raise MediaUnreachable(
                        f"The media URL redirected more than {MAX_REDIRECTS} times. Send the file's final URL.",
                        details={"field": field, "reason": "too_many_redirects"},
                    )
                redirects += 1
                current = urljoin(current, target)
            with response:
                if not 200 <= response.status_code < 300:
                    raise MediaUnreachable(
                        f"The media server answered HTTP {response.status_code} for the file. "
                        "Check that the URL is correct and the file is publicly accessible.",
                        details={"field": field, "reason": "http_status", "status": response.status_code},
                    )
                _check_declared_length(response=response, max_bytes=max_bytes, field=field)
                data = _read_body(
                    response=response, deadline=deadline, max_bytes=max_bytes, timeout=timeout, field=field
                )
                content_type = response.headers.get("Content-Type", "")
            if guard.expired:  # a cut connection can look like a clean end of a close-delimited body
                _raise_timeout(timeout=timeout, field=field)
        except (MediaUrlNotAllowed, MediaUnreachable, MediaTooLarge):
            raise
        except (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
            ValueError,
        ) as exc:
            if guard.expired or time.monotonic() >= deadline:
                _raise_timeout(timeout=timeout, field=field, cause=exc)
            _raise_translated(exc, field=field, timeout=timeout)
    return DownloadedMedia(
        url=url,
        final_url=current,
        data=data,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=content_type,
        elapsed=time.monotonic() - started,
    )


def _remaining(*, deadline: float, timeout: float, field: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        _raise_timeout(timeout=timeout, field=field)
    return remaining


def _check_declared_length(*, response: requests.Response, max_bytes: int, field: str) -> None:
    """Fail before reading when the server announces too much. A missing or false header changes nothing:
    _read_body counts the bytes themselves."""
    declared = response.headers.get("Content-Length", "").strip()
    if ascii_digits(declared) and int(declared) > max_bytes:
        _raise_too_large(max_bytes=max_bytes, field=field)


def _read_body(*, response: requests.Response, deadline: float, max_bytes: int, timeout: float, field: str) -> bytes:
    raw = response.raw
    body = bytearray()
    while True:
        remaining = _remaining(deadline=deadline, timeout=timeout, field=field)
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(remaining)  # the next read may not wait past the deadline
        # read1 returns what one receive brings (at most the amount asked), so a slow server cannot
        # keep one read going; asking for at most one byte past the limit bounds memory.
        chunk = raw.read1(min(CHUNK_BYTES, max_bytes + 1 - len(body)), decode_content=True)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > max_bytes:
            _raise_too_large(max_bytes=max_bytes, field=field)


def _raise_too_large(*, max_bytes: int, field: str) -> NoReturn:
    raise MediaTooLarge(
        f"The media file is larger than the limit of {human_size(max_bytes)}. Send a smaller file.",
        details={"field": field, "limitBytes": max_bytes},
    )


def _raise_timeout(*, timeout: float, field: str, cause: BaseException | None = None) -> NoReturn:
    raise MediaUnreachable(
        f"The media file could not be downloaded within {timeout:g} seconds. "
        "Host it on a faster server or send a smaller file.",
        details={"field": field, "reason": "timeout"},
    ) from cause


def _raise_translated(exc: BaseException, *, field: str, timeout: float) -> NoReturn:
    if isinstance(exc, _AddressRefused):
        raise MediaUrlNotAllowed(
            "The media URL points to a private, local or reserved network address. "
            "Host the file at a publicly reachable address.",
            details={"field": field, "reason": "address"},
        ) from exc
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
        _raise_timeout(timeout=timeout, field=field, cause=exc)
    if isinstance(exc, _NameNotResolved):
        raise MediaUnreachable(
            "The media URL's host name could not be resolved. Check the URL for typos.",
            details={"field": field, "reason": "dns_failed"},
        ) from exc
    if isinstance(exc, (requests.exceptions.SSLError, urllib3.exceptions.SSLError)):
        raise MediaUnreachable(
            "The media server's TLS certificate could not be verified. "
            "Host the file on a server with a valid HTTPS certificate.",
            details={"field": field, "reason": "tls_failed"},
        ) from exc
    if isinstance(
        exc,
        (
            requests.exceptions.InvalidURL,
            requests.exceptions.URLRequired,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            urllib3.exceptions.LocationValueError,
        ),
    ):
        raise MediaUrlNotAllowed(
            "The media URL is not a valid URL. Send a complete http:// or https:// URL.",
            details={"field": field, "reason": "invalid_url"},
        ) from exc
    raise MediaUnreachable(
        "The connection to the media server failed. Check that the URL is correct and the file is "
        "publicly accessible, then retry.",
        details={"field": field, "reason": "connection_failed"},
    ) from exc
