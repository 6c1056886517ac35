"""The guarded transport of outgoing requests: a requests session whose connections go to the checked
address only (conversations/media/addresses.py) and whose whole exchange ends at one deadline.

No database access.
"""

from __future__ import annotations

import contextvars
import http.client
import socket
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter_adapter import IPFilterAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .addresses import (
    DEFAULT_PORTS,
    MEDIA_ALLOW_SETTING,
    host_resolve_checked,
)

USER_AGENT = "ChannelsAPI-MediaFetcher/1.0"


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


class _LastLine:
    """A response's file that remembers the last line read from it (the headers' end, _HeadersEndedResponse)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.last: bytes | None = None

    def readline(self, *args: Any) -> bytes:
        self.last = self.raw.readline(*args)
        return self.last

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class HeadersCut(http.client.HTTPException):
    """The connection ended (or the deadline cut it) inside the response's headers."""


class _HeadersEndedResponse(http.client.HTTPResponse):
    """http.client takes the end of the connection inside the headers for their end: a server that sends
    `HTTP/1.1 200 OK` and closes (or is cut at the deadline while it drips a header a byte at a time) would
    look like a complete 200. Here the headers must end with their empty line, or HeadersCut is raised."""

    def begin(self) -> None:
        tracker = _LastLine(self.fp)
        self.fp = tracker  # type: ignore[assignment]
        try:
            super().begin()
        finally:
            if self.fp is tracker:
                self.fp = tracker.raw
        if tracker.last not in (b"\r\n", b"\n"):
            self.close()
            raise HeadersCut("the response's headers were cut")


class _GuardedConnectionMixin:
    response_class: type[http.client.HTTPResponse] = _HeadersEndedResponse

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
