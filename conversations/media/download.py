"""SSRF-safe download of a media URL that an integrator sent.

Built on requests + requests-hardened. The adapter resolves the host name once, checks every address it
resolves to, then connects to the checked address (the Host header, TLS SNI and the certificate check keep
the name), so a DNS answer that changes between the check and the connection (rebinding) cannot move it.
Redirects are followed here, one hop at a time, each through the same checks.

Webhook deliveries (webhooks/delivery.py) go through the same checks and session, with their own allow
list (`allow_setting="WEBHOOK_ALLOW_PRIVATE_HOSTS"`) and no redirects at all.

No database access: the caller runs it outside any transaction (docs/architecture.md, "The three phases": Think).
"""

from __future__ import annotations

import contextvars
import hashlib
import http.client
import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, NoReturn
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES
from requests_hardened.ip_filter_adapter import IPFilterAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import parse_url
from urllib3.util.connection import allowed_gai_family

from config.text import human_size

from .errors import MediaTooLarge, MediaUnreachable, MediaUrlNotAllowed

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_REDIRECTS = 3  # enough for http→https and a CDN hop; each hop costs a resolution and a connection
CHUNK_BYTES = 64 * 1024  # one read; the deadline and the size limit are checked between reads
ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
USER_AGENT = "ChannelsAPI-MediaFetcher/1.0"
REQUEST_HEADERS = {
    "Accept": "*/*",
    # The size limit counts the bytes we keep; a compressed body is still decoded (and counted) if a
    # server sends one anyway, but asking for identity keeps decompression work off the common path.
    "Accept-Encoding": "identity",
}

# Never reachable, not even through MEDIA_ALLOW_PRIVATE_HOSTS: they hand out cloud credentials.
CLOUD_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean instance metadata
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud metadata
        "192.0.0.192",  # Oracle Cloud metadata
    )
)


@dataclass(frozen=True)
class DownloadedMedia:
    url: str  # as the integrator sent it
    final_url: str  # after redirects
    data: bytes = dataclass_field(repr=False)
    size: int
    sha256: str  # hex
    content_type: str  # the server's Content-Type header, "" when absent; never trusted for the type check
    elapsed: float  # seconds, resolution to last byte


# --- the address policy -------------------------------------------------------------------------------


def address_is_public(address: IPAddress) -> bool:
    """True only for an address of the public internet.

    An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is judged by its IPv4 address. On top of the standard
    library's classification this refuses requests-hardened's extra ranges (CGNAT 100.64/10, NAT64,
    6to4, ...) and the cloud metadata addresses.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in CLOUD_METADATA_ADDRESSES:
        return False
    if (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    ):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return False
    return not any(address in network for network in EXTRA_BLOCKED_NET_RANGES)


@dataclass(frozen=True)
class _AllowList:
    hostnames: frozenset[str]
    networks: tuple[IPNetwork, ...]


MEDIA_ALLOW_SETTING = "MEDIA_ALLOW_PRIVATE_HOSTS"


def _allow_list(setting: str = MEDIA_ALLOW_SETTING) -> _AllowList:
    """settings.<setting> (MEDIA_ALLOW_PRIVATE_HOSTS by default): host names (matched exactly) or
    addresses/CIDRs."""
    entries = getattr(settings, setting, None) or []
    if isinstance(entries, str):
        entries = entries.split(",")
    hostnames: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in entries:
        entry = entry.strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            hostnames.add(entry)
    return _AllowList(hostnames=frozenset(hostnames), networks=tuple(networks))


class _AddressRefused(requests.RequestException):
    """The host resolves to an address that media downloads may not reach."""


class _NameNotResolved(requests.ConnectionError):
    pass


def _plain(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def host_resolve_checked(*, host: str, port: int, allow_setting: str = MEDIA_ALLOW_SETTING) -> str:
    """Resolve `host` once and return the address to connect to (IPv6 in brackets).

    Every address the name resolves to must be public, or covered by the allow list in `allow_setting`
    (MEDIA_ALLOW_PRIVATE_HOSTS by default: the host name itself, or a network holding the address). Cloud
    metadata addresses never pass. Raises _AddressRefused or _NameNotResolved (requests exceptions, so they
    leave the adapter unwrapped).
    """
    allow = _allow_list(allow_setting)
    name = host.lower().rstrip(".")
    try:
        infos = socket.getaddrinfo(host, port, family=allowed_gai_family(), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _NameNotResolved(f"cannot resolve {host}") from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not addresses:
        raise _NameNotResolved(f"no address for {host}")
    for address in addresses:
        plain = _plain(address)
        allowed = plain not in CLOUD_METADATA_ADDRESSES and (
            address_is_public(plain) or name in allow.hostnames or any(plain in network for network in allow.networks)
        )
        if not allowed:
            logger.warning("outbound request refused (%s): %s resolves to %s", allow_setting, host, address)
            raise _AddressRefused(f"{host} resolves to a non-public address")
    chosen = addresses[0]
    return f"[{chosen}]" if chosen.version == 6 else str(chosen)


# --- the whole-download deadline ----------------------------------------------------------------------


class _DeadlineGuard:
    """Cuts every connection of one download at its deadline, whatever it is blocked in.

    Socket timeouts bound each read, not their sum: a server sending one byte just inside every timeout
    (in the headers, a chunk-size line or the body) would hold a worker for hours. At the deadline a timer
    shuts down a duplicate of each socket; shutdown(2) acts on the connection, so the read blocked on the
    original descriptor returns at once (also under gevent, where the timer is a greenlet).
    """

    def __init__(self, *, deadline: float):
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        self.expired = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire)
        self._timer.daemon = True
        self._token: contextvars.Token[_DeadlineGuard | None] | None = None

    def __enter__(self) -> _DeadlineGuard:
        self._token = _current_guard.set(self)
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        if self._token is not None:
            _current_guard.reset(self._token)
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    def watch(self, sock: socket.socket) -> None:
        duplicate = sock.dup()
        with self._lock:
            if not self._closed and not self.expired:
                self._sockets.append(duplicate)
                return
        _shutdown(duplicate)
        duplicate.close()

    def _expire(self) -> None:
        with self._lock:
            if self._closed:
                return
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the other side


_current_guard: contextvars.ContextVar[_DeadlineGuard | None] = contextvars.ContextVar(
    "media_download_guard", default=None
)


class _GuardedConnectionMixin:
    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        guard = _current_guard.get()
        if guard is not None:
            guard.watch(sock)
        return sock


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


# --- the session --------------------------------------------------------------------------------------


class _CheckedAddressAdapter(IPFilterAdapter):
    """requests-hardened's IPFilterAdapter with our address policy and guarded connections.

    Its own filter checks only the first resolved address and knows only "allow loopback"; ours checks
    all of them and honours MEDIA_ALLOW_PRIVATE_HOSTS (names and CIDRs; another setting's list with
    `allow_setting`). The rest is the same: the pool connects to the checked address while the Host header,
    SNI and certificate check use the name.
    """

    def __init__(self, *args: Any, allow_setting: str = MEDIA_ALLOW_SETTING, **kwargs: Any) -> None:
        self.allow_setting = allow_setting
        super().__init__(*args, **kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPConnectionPool,
            "https": _GuardedHTTPSConnectionPool,
        }

    def build_connection_pool_key_attributes(
        self,
        request: requests.PreparedRequest,
        verify: Any,
        cert: Any = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        # IPFilterAdapter's method, with host_resolve_checked in place of its filter_host.
        host_params, pool_kwargs = HTTPAdapter.build_connection_pool_key_attributes(self, request, verify, cert)
        hostname: str = host_params["host"]
        port: int | None = host_params["port"]
        request.headers = CaseInsensitiveDict(request.headers or {})
        host_header = f"[{hostname}]" if ":" in hostname else hostname
        if port is not None:
            host_header += f":{port}"
        request.headers["Host"] = host_header
        if self._is_https_proto:
            pool_kwargs["assert_hostname"] = hostname
            pool_kwargs["server_hostname"] = hostname
        host_params["host"] = host_resolve_checked(
            host=hostname, port=port or DEFAULT_PORTS[host_params["scheme"]], allow_setting=self.allow_setting
        )
        return host_params, pool_kwargs


def _session(*, timeout: float, allow_setting: str = MEDIA_ALLOW_SETTING, user_agent: str = USER_AGENT) -> HTTPSession:
    session = HTTPSession(
        Config(
            ip_filter_enable=False,  # replaced by _CheckedAddressAdapter, mounted below
            ip_filter_allow_loopback_ips=False,
            never_redirect=True,  # redirects are followed by media_download, hop by hop
            default_timeout=(timeout, timeout),
            user_agent_override=user_agent,
        )
    )
    session.trust_env = False  # no proxy, .netrc or CA bundle from the environment
    session.mount("http://", _CheckedAddressAdapter(is_https_proto=False, allow_setting=allow_setting))
    session.mount("https://", _CheckedAddressAdapter(is_https_proto=True, allow_setting=allow_setting))
    return session


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


def _check_url(*, url: str, field: str) -> None:
    try:
        split = urlsplit(url)
        parsed = parse_url(url)
        split.port  # noqa: B018 -- raises ValueError on a port out of range
    except ValueError as exc:
        raise MediaUrlNotAllowed(
            "The media URL is not a valid URL. Send a complete http:// or https:// URL.",
            details={"field": field, "reason": "invalid_url"},
        ) from exc
    scheme = (split.scheme or "").lower()
    if scheme not in ALLOWED_SCHEMES:
        raise MediaUrlNotAllowed(
            "The media URL must start with http:// or https://. Send a public web address of the file.",
            details={"field": field, "reason": "scheme"},
        )
    if "@" in split.netloc or parsed.auth:
        raise MediaUrlNotAllowed(
            "The media URL must not contain a user name or password. "
            "Host the file at a public URL that needs no login.",
            details={"field": field, "reason": "credentials"},
        )
    if not split.hostname:
        raise MediaUrlNotAllowed(
            "The media URL has no host name. Send a complete http:// or https:// URL.",
            details={"field": field, "reason": "invalid_url"},
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
    if declared.isdigit() and int(declared) > max_bytes:
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
