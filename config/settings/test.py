"""Test overrides: fast and quiet. Services come from DATABASE_URL / REDIS_URL when set (CI sets both)."""

from .base import *  # noqa: F403
from .base import logging_config

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # admin logins in tests only
# Production's logger levels, nothing written: a test that reads logs attaches its own handler
# (tests/config/test_logging.py).
LOGGING = logging_config(level="WARNING", renderer="json")
LOGGING["handlers"] = {"console": {"class": "logging.NullHandler"}}
MEDIA_ROOT = BASE_DIR / "var" / "test-media"  # noqa: F405
CELERY_TASK_ALWAYS_EAGER = True
# Nothing sends webhooks in the background unless a test asks for it (tests/webhooks/test_dispatch.py): a
# test drives each attempt itself, and no thread of an earlier test touches a later test's rows.
WEBHOOK_LOCAL_SENDER = False
