"""Test overrides: fast and quiet. Services come from DATABASE_URL / REDIS_URL when set (CI sets both)."""

import os

# pytest-xdist's worker (gw0, gw1, ...): its own Redis keys (the cache's and the broker's, config/cache.py),
# inherited by the servers and workers its tests start, and its own media directory. pytest-django gives it
# its own test database (test_<name>_gwN).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if WORKER:
    os.environ["REDIS_KEY_PREFIX"] = f"test-{WORKER}:"

from .base import *  # noqa: E402, F403
from .base import logging_config  # noqa: E402

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # admin logins in tests only
# Production's logger levels, nothing written: a test that reads logs attaches its own handler
# (tests/config/test_logging.py).
LOGGING = logging_config(level="WARNING", renderer="json")
LOGGING["handlers"] = {"console": {"class": "logging.NullHandler"}}
MEDIA_ROOT = BASE_DIR / "var" / "test-media" / (WORKER or "main")  # noqa: F405
CELERY_TASK_ALWAYS_EAGER = True
# Nothing sends webhooks in the background unless a test asks for it (tests/webhooks/test_dispatch.py): a
# test drives each attempt itself, and no thread of an earlier test touches a later test's rows.
WEBHOOK_LOCAL_SENDER = False
