"""Errors of the webhooks app (raised by its services; the commands and the admin show their message)."""

from config.errors import ApplicationError


class WebhookUrlNotAllowed(ApplicationError):
    """The URL breaks the address rules of media downloads (README "Media"), with
    WEBHOOK_ALLOW_PRIVATE_HOSTS as the only exception.

    details: `url`, `reason` ("invalid_url", "scheme", "credentials", "address", "dns_failed").
    """

    code = "webhook_url_not_allowed"
    status_code = 400
    default_message = "The webhook URL is not allowed. Use a public http:// or https:// URL that needs no login."


class WebhookNotFound(ApplicationError):
    code = "webhook_not_found"
    status_code = 404
    default_message = "The channel has no webhook. Set one with `manage.py webhook set CHANNEL_ID URL`."
