"""The address policy of outgoing requests (media downloads, webhook deliveries): which URLs and addresses
may be fetched, and the host name's resolution, checked address by address (README "Media").

No database access.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES
from urllib3.util import parse_url
from urllib3.util.connection import allowed_gai_family

from .errors import MediaUrlNotAllowed

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}

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
