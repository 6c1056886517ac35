"""The address rules for webhook URLs: the media download's own checks (conversations/media/addresses.py),
with WEBHOOK_ALLOW_PRIVATE_HOSTS as the only exception (README "Webhooks")."""

from urllib.parse import urlsplit

from conversations.media.addresses import (
    DEFAULT_PORTS,
    _AddressRefused,
    _check_url,
    _NameNotResolved,
    host_resolve_checked,
)
from conversations.media.errors import MediaUrlNotAllowed
from webhooks.errors import WebhookUrlNotAllowed

ALLOW_SETTING = "WEBHOOK_ALLOW_PRIVATE_HOSTS"
URL_MAX_CHARS = 2048  # as media URLs

_MESSAGES = {
    "invalid_url": "The webhook URL is not a valid URL. Send a complete http:// or https:// URL.",
    "scheme": "The webhook URL must start with http:// or https://.",
    "credentials": "The webhook URL must not contain a user name or password; verify our signature instead.",
    "address": "The webhook URL points to a private, local or reserved network address. Use a publicly "
    "reachable address. For development, list the host in WEBHOOK_ALLOW_PRIVATE_HOSTS (hosts or CIDRs; never "
    "cloud metadata addresses) in the environment of the process that sets the URL (manage.py's own, or the "
    "web server's for the admin) and of those that send the webhooks (the web server, the Celery worker): "
    "every delivery checks the address again.",
    "dns_failed": "The webhook URL's host name could not be resolved. Check it for typos.",
}


def url_syntax_reason(*, url: str) -> str | None:
    """Why the URL itself (before any resolution) is refused, or None: the media download's checks."""
    if len(url) > URL_MAX_CHARS:
        return "invalid_url"
    try:
        _check_url(url=url, field="webhook_url")
    except MediaUrlNotAllowed as error:
        return error.details.get("reason", "invalid_url")
    return None


def webhook_url_check(*, url: str) -> None:
    """Raise WebhookUrlNotAllowed unless `url` is http(s), without credentials, and every address its host
    resolves to is public or allowed by WEBHOOK_ALLOW_PRIVATE_HOSTS. Resolves the name (a DNS query), so
    it is for setting a URL; every delivery attempt checks again, at the address it connects to."""
    reason = url_syntax_reason(url=url)
    if reason is None:
        split = urlsplit(url)
        scheme = split.scheme.lower()
        try:
            host_resolve_checked(
                host=split.hostname or "", port=split.port or DEFAULT_PORTS[scheme], allow_setting=ALLOW_SETTING
            )
        except _AddressRefused:
            reason = "address"
        except _NameNotResolved:
            reason = "dns_failed"
    if reason is not None:
        raise WebhookUrlNotAllowed(
            _MESSAGES.get(reason, _MESSAGES["invalid_url"]), details={"url": url, "reason": reason}
        )
