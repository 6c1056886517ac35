"""Errors of the media layer. Every one carries `details.field`, the request field that named the media."""

from config.errors import ApplicationError


class MediaUrlNotAllowed(ApplicationError):
    """The URL itself is refused before or instead of a download: scheme, credentials, non-public address.

    details: `field`, `reason` ("invalid_url", "scheme", "credentials", "address").
    """

    code = "media_url_not_allowed"
    status_code = 400
    default_message = "The media URL is not allowed. Send a public http:// or https:// URL that needs no login."


class MediaUnreachable(ApplicationError):
    """The download was tried and failed.

    details: `field`, `reason` ("timeout", "http_status" with `status`, "dns_failed", "tls_failed",
    "connection_failed", "too_many_redirects").
    """

    code = "media_unreachable"
    status_code = 400
    default_message = (
        "The media file could not be downloaded. Check that the URL is correct and publicly accessible, then retry."
    )


class MediaTooLarge(ApplicationError):
    """details: `field`, `limitBytes`."""

    code = "media_too_large"
    status_code = 413
    default_message = "The media file is larger than the size limit. Send a smaller file."


class MediaTypeMismatch(ApplicationError):
    """details: `field`, `declaredType`, `detectedMimeType`, `allowed`."""

    code = "media_type_mismatch"
    status_code = 400
    default_message = "The media file's content does not match the message type. Send a file of that type."
