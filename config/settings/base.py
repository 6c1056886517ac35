"""Settings, read from the environment (CONTRACT.md lists the variables).

One env-driven module: development, CI and production differ only by their environment.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
# The development key is refused in production by `manage.py check --deploy`; set SECRET_KEY there.
SECRET_KEY = env.str("SECRET_KEY", default="dev-insecure-channels-api-secret-key-change-me-0123456789")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    "backoffice.admin_apps.BackofficeAdminConfig",  # django.contrib.admin with the back office's site (dashboard)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served by us (no CDN)
    "django_structlog",
    "django_prometheus",
    "channels_app",
    "contacts",
    "conversations",
    "backoffice",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",  # first: times the whole stack
    "config.logs.RequestIdMiddleware",  # before django-structlog, which logs the id this one settles
    "django_structlog.middlewares.RequestMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",  # last
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
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's built-in psycopg pool. The request releases its connection between the accept and record
    # phases (DESIGN.md), so a process needs about as many connections as requests in those short phases,
    # not as many as requests waiting on the agent.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DB_POOL_MAX_SIZE", default=20),
        "timeout": env.float("DB_POOL_TIMEOUT", default=10.0),
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # required by the pool: it owns the connections' lifetime
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the single writer; the timeout makes a writer wait for the lock
    # instead of failing at once with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache / broker ---------------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "channels-api",
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

# --- LLM for the demo agent ------------------------------------------------------------------------------
LLM_BASE_URL = env.str("LLM_BASE_URL", default="")
LLM_API_KEY = env.str("LLM_API_KEY", default="")
LLM_MODEL = env.str("LLM_MODEL", default="")

# --- media -----------------------------------------------------------------------------------------------
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "var" / "media")
MEDIA_URL = "/media/"
MEDIA_ALLOW_PRIVATE_HOSTS = env.list("MEDIA_ALLOW_PRIVATE_HOSTS", default=[])
MEDIA_MAX_BYTES = 10 * 1024 * 1024  # the spec's per-file limit
MEDIA_DOWNLOAD_TIMEOUT_SECONDS = 30.0  # the spec's download timeout, for the whole download
MEDIA_CACHE_SECONDS = env.int("MEDIA_CACHE_SECONDS", default=24 * 3600)

# --- the messages pipeline -------------------------------------------------------------------------------
# How long a claimed idempotency key (and an inbound message's turn in its conversation) stays locked when
# its request dies mid-way: longer than the slowest request (media 30 s + agent 60 s + margin).
PROCESSING_LEASE_SECONDS = env.int("PROCESSING_LEASE_SECONDS", default=150)
IDEMPOTENCY_RETENTION_SECONDS = env.int("IDEMPOTENCY_RETENTION_SECONDS", default=24 * 3600)
# A request waiting for an earlier message of its conversation to be answered gives up after this long.
CONVERSATION_TURN_WAIT_SECONDS = env.float("CONVERSATION_TURN_WAIT_SECONDS", default=120.0)
API_KEY_LAST_USED_INTERVAL_SECONDS = 60  # at most one write per key per minute for "last used"

# --- auth, i18n, static --------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
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
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Runs after authentication (DRF's order), so it counts per API key; anonymous requests are not counted.
    "DEFAULT_THROTTLE_CLASSES": ["channels_app.throttling.ApiKeyRateThrottle"],
    "EXCEPTION_HANDLER": "channels_app.errors.exception_handler",
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
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "channels_app.schema.require_request_bodies",
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

# --- benchmarks (bench/) ---------------------------------------------------------------------------------
# Mounts a bare DRF view at /api/bench/bare for the ceiling's reference (scenario 1); off in production.
BENCH_BARE_VIEW = env.bool("BENCH_BARE_VIEW", default=False)

# --- periodic clean-ups (Celery beat) ----------------------------------------------------------------------
# A static schedule (no database scheduler): `celery -A config worker --beat`. `manage.py cleanup` runs the
# same code synchronously.
CELERY_BEAT_SCHEDULE = {
    "cleanup": {
        "task": "channels_app.tasks.cleanup_task",
        # Expired rows only cost space until the next run, and each run is batched and short.
        "schedule": 10 * 60,
        # A run that no worker picked up before the next one is due is dropped, not piled up.
        "options": {"expires": 9 * 60},
    },
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
