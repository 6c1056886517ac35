"""The benchmark's settings: production's (config.settings.base, read from the environment, unchanged) with
the bench's own URLconf, which adds the bare reference view. bench/run.py starts gunicorn and bench/inproc.py
with DJANGO_SETTINGS_MODULE=bench.settings; production never imports bench/."""

from config.settings.base import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
