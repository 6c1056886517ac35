"""gunicorn for production: the gevent worker, so a process holds many requests waiting on the agent.

Sizing (README "Production"): WEB_CONCURRENCY processes (default: one per core), each with up to
GUNICORN_WORKER_CONNECTIONS concurrent requests. A request holds a database connection only in its two
short transactions, so DB_POOL_MAX_SIZE (default 20) per process is enough for hundreds of requests.
"""

import multiprocessing
import os

worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
# Longer than the slowest request: media (30 s) plus the agent's timeout (60 s by default) plus margin.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "150"))
graceful_timeout = 30
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
