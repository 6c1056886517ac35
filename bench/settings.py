"""The benchmark's settings: production's (config.settings.base, read from the environment, unchanged) with
the bench's own URLconf, which adds the bare reference view. bench/run.py starts gunicorn and bench/inproc.py
with DJANGO_SETTINGS_MODULE=bench.settings; production never imports bench/. With BENCH_GC_STATS_DIR (set by
bench/run.py for its gunicorn) each process also counts its time in the garbage collector (bench/gcstats.py)."""

import os

from config.settings.base import *  # noqa: F403

ROOT_URLCONF = "bench.urls"

if os.environ.get("BENCH_GC_STATS_DIR"):
    from bench.gcstats import install

    install(os.environ["BENCH_GC_STATS_DIR"])
