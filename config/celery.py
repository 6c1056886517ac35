"""The Celery app: Redis broker from REDIS_URL, configuration from Django's settings (CELERY_* names).

With no REDIS_URL the broker is "memory://" and tasks run eagerly in the caller (settings), so the API and
`manage.py cleanup` need no Redis. Run the clean-ups with `celery -A config worker --beat`.

Logging is Django's (settings.LOGGING): the worker and beat write the same JSON lines at LOG_LEVEL as the web
process, instead of Celery's own format (Celery's `--loglevel` has no effect). Beat's schedule file lives
under var/ (settings.CELERY_BEAT_SCHEDULE_FILENAME), not in the directory the worker was started from.
"""

import logging
import os
from logging.config import dictConfig
from pathlib import Path

from celery import Celery
from celery.beat import PersistentScheduler
from celery.signals import celeryd_init, setup_logging

# A process that names no settings (the worker, beat) gets the base ones. Remembered, because importing this
# package sets it for children too: config/localdb.py takes it out again of its command's environment.
SETTINGS_DEFAULTED = "DJANGO_SETTINGS_MODULE" not in os.environ
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("channels")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _django_logging(**kwargs) -> None:
    """Django's LOGGING, and Python's warnings as log lines (Celery warns at start-up, e.g. about running
    as root). Connected to `setup_logging`, it replaces Celery's own logging set-up altogether; connected to
    `celeryd_init` too, it applies in a worker before the first warning."""
    from django.conf import settings

    dictConfig(settings.LOGGING)
    logging.captureWarnings(True)


setup_logging.connect(_django_logging, weak=False)
celeryd_init.connect(_django_logging, weak=False)


class Scheduler(PersistentScheduler):
    """Celery's default scheduler; it creates the folder of its schedule file first (var/ is not in git)."""

    def setup_schedule(self) -> None:
        Path(self.schedule_filename).parent.mkdir(parents=True, exist_ok=True)
        super().setup_schedule()
