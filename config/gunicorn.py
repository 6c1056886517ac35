"""gunicorn for production: the gevent worker, so a process holds many requests waiting on the agent.

Sizing (README "Production"): WEB_CONCURRENCY processes (default: one per core), each with up to
GUNICORN_WORKER_CONNECTIONS concurrent requests. A request holds a database connection only in its two
short transactions, so DB_POOL_MAX_SIZE (default 20) per process is enough for hundreds of requests.
"""

import multiprocessing
import os
import sys


def _refuse_development_secret_key() -> None:
    """No production server with the public development SECRET_KEY (unless DEBUG is on): anyone could sign
    sessions and admin logins with it. Reads only the settings module: this runs in gunicorn's master, before
    the workers' gevent patching, and `django.db` imported here would break every worker's connections."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    from django.conf import settings

    from config.checks import SECRET_KEY_HINT, secret_key_problem

    problem = secret_key_problem(settings)
    if problem:
        print(f"Refusing to start: {problem} {SECRET_KEY_HINT}", file=sys.stderr, flush=True)
        sys.exit(1)


_refuse_development_secret_key()

# gunicorn's gevent worker and logger, answering malformed HTTP with our JSON error body and logging JSON
# lines like the application (config/gunicorn_json.py).
worker_class = "config.gunicorn_json.JsonErrorsGeventWorker"
logger_class = "config.gunicorn_json.JsonLogger"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
# Longer than the slowest request: media (30 s), a document's text (10 s), the agent's timeout (60 s by
# default), plus margin.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "150"))
graceful_timeout = 30
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# gunicorn's control socket has one fixed path per user, so two servers on one machine (CI's fuzz run beside
# a benchmark) would fight over it; signals (HUP, TTIN, TTOU, TERM) do the same job.
control_socket_disable = True


def post_worker_init(worker):
    """Once the worker has loaded the application: the objects it made while loading (Django, the apps, the
    SDK; about 200,000) will live as long as the process, so they leave the cyclic garbage collector's
    care. Else every full collection walks them all again: the collector took 0.27 ms of CPU per message
    in a sequential run, 0.06 ms with them frozen (bench/RESULTS.md, "CPU per message")."""
    import gc

    gc.freeze()


# --- Prometheus with several processes ------------------------------------------------------------------
# Each worker counts in its own memory; a scrape of /metrics reaches one worker at random. With
# PROMETHEUS_MULTIPROC_DIR set before the workers import prometheus_client, they write their counts to
# files there and /metrics (django-prometheus) adds up all of them. Set here, in the master, so every
# worker inherits it; a fresh folder per start, so counts from an earlier run do not linger.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="channels-api-metrics-")
    _metrics_dir_ours = True
else:
    _metrics_dir_ours = False


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _metrics_dir_ours:
        import shutil

        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
