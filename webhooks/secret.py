"""Webhook signing secrets: made here, stored encrypted, read back only to sign.

A secret is `whsec_` + base64 of 32 random bytes (the Standard Webhooks format, which the `standardwebhooks`
package's Webhook(secret) reads; 256 bits, the size of the HMAC-SHA256 key it becomes). It must be readable
to sign, so it cannot be hashed like an API key. It is encrypted with Fernet (AES-128-CBC + HMAC-SHA256,
the `cryptography` package) under a key derived from SECRET_KEY: a copy of the database alone (a backup, a
replica, an SQL injection elsewhere) does not let anyone forge our events. SECRET_KEY_FALLBACKS still
decrypt, so SECRET_KEY can be rotated the Django way; a secret no key decrypts fails its deliveries with
`secret_unreadable` until `manage.py webhook secret` gives the channel a new one.
"""

import base64
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.utils.crypto import salted_hmac

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
_KEY_SALT = "webhooks.secrets.fernet"  # a key used for nothing else than these secrets


class SecretUnreadable(Exception):
    """No key of SECRET_KEY and SECRET_KEY_FALLBACKS decrypts the stored secret."""


def secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _fernet() -> MultiFernet:
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet(
        [
            Fernet(base64.urlsafe_b64encode(salted_hmac(_KEY_SALT, "v1", secret=key, algorithm="sha256").digest()))
            for key in keys
        ]
    )


def secret_encrypt(*, secret: str) -> bytes:
    return _fernet().encrypt(secret.encode())


def secret_decrypt(*, encrypted: bytes | memoryview) -> str:
    try:
        return _fernet().decrypt(bytes(encrypted)).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("the webhook secret was encrypted under a key no longer configured") from exc
