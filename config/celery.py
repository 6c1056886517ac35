"""The Celery app: Redis broker from REDIS_URL, configuration from Django's settings (CELERY_* names).

With no REDIS_URL the broker is "memory://" and tasks run eagerly in the caller (settings), so the API and
`manage.py cleanup` need no Redis. Run the clean-ups with `celery -A config worker --beat`.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("channels")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
