"""Django settings for reviewq.

Everything is read from environment variables through the small typed helpers below, with
defaults that run on a laptop: SQLite, no Redis, model work in a thread of the web process
(the "embedded" mode). Setting ``DATABASE_URL`` and ``REDIS_URL`` switches to the services
mode used in production and CI: PostgreSQL, a Celery broker and channels-redis.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    return os.getenv(name, default).strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: str) -> int:
    return int(os.getenv(name, default))


def envfloat(name: str, default: str) -> float:
    return float(os.getenv(name, default))


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


DEBUG = envbool("DEBUG", "False")
# HTTPS-only cookies, HSTS, a real secret key, and webhooks only to public hosts (see below).
PRODUCTION = not DEBUG and envbool("REVIEWQ_PRODUCTION", "False")
# A fixed development key is fine on a laptop; production refuses to start without its own.
SECRET_KEY = os.getenv("SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("REVIEWQ_PRODUCTION is on: set SECRET_KEY (a long random string)")
    SECRET_KEY = "reviewq-insecure-development-key-change-me-0123456789"
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000")

# Where local state lives in the embedded mode (SQLite database, assembled model files).
DATA_DIR = Path(os.getenv("REVIEWQ_DATA_DIR", str(BASE_DIR / ".data")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    # Listed so /api/v1/docs serves django-ninja's own Swagger files, not a CDN's (works offline).
    "ninja",
    "reviewq",
    "router",
    "telemetry",
]

MIDDLEWARE = [
    "reviewq.runtime.middleware.RequestIdMiddleware",
    # NUL characters, lone surrogates, oversized or unreadable bodies: a 4xx before anything reads them.
    "reviewq.untrusted.UntrustedInputMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "reviewq.urls"
ASGI_APPLICATION = "reviewq.asgi.application"

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

DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL", f"sqlite:///{DATA_DIR / 'reviewq.sqlite3'}"),
        conn_max_age=envint("DB_CONN_MAX_AGE", "0"),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the model thread write while web requests read.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so test servers and workers in other processes see the same data; one per
    # test process, so parallel runs do not collide.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-reviewq-{os.getpid()}.sqlite3")}
# A connection pool per web process (psycopg_pool), applied by reviewq/asgi.py through
# reviewq.runtime.database: every request would otherwise open a new PostgreSQL connection, which
# costs more server CPU than the rest of a routine request. Not CONN_MAX_AGE under ASGI instead:
# a request's sync work runs on a thread lent from a pool (reviewq.runtime.asgi_handler keeps up
# to 64 idle ones), and each would keep its own connection open. Workers and commands keep plain
# connections.
WEB_DB_POOL = (
    {
        "min_size": envint("DB_POOL_MIN_SIZE", "2"),
        "max_size": envint("DB_POOL_MAX_SIZE", "20"),
        "timeout": envfloat("DB_POOL_TIMEOUT", "10"),
    }
    if envbool("DB_POOL", "true") and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    else None
)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/review/"

# --- Services: Redis switches Celery and the channel layer from embedded to distributed. ---
REDIS_URL = os.getenv("REDIS_URL", "")
# In the embedded mode the pipeline runs in a thread pool inside the web process. It is the default
# without Redis; with Redis, Celery workers do the work unless this is forced on.
EMBEDDED_WORKER = envbool("REVIEWQ_EMBEDDED_WORKER", "false" if REDIS_URL else "true")
EMBEDDED_WORKER_THREADS = envint("EMBEDDED_WORKER_THREADS", "1")
# Seconds a Celery worker keeps its database connection between tasks (see reviewq/celery.py).
WORKER_DB_CONN_MAX_AGE = envint("WORKER_DB_CONN_MAX_AGE", "600")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 500, "expiry": 30},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = envint("CELERY_TASK_SOFT_TIME_LIMIT", "120")
CELERY_TASK_TIME_LIMIT = envint("CELERY_TASK_TIME_LIMIT", "150")
CELERY_TASK_IGNORE_RESULT = True
# Training runs for minutes to hours on its own queue (`make train-worker`), never beside the
# pipeline; in the embedded mode each such queue gets one background thread, one job at a time.
CELERY_TASK_ROUTES = {
    "reviewq.tasks.train_adapter": {"queue": "training"},
    "reviewq.tasks.run_learning_cycle": {"queue": "training"},
}
# Workers keep their database connection between tasks instead of Celery closing it around each
# one (reviewq/celery.py); this forces a fresh one every 1000 tasks all the same.
CELERY_DB_REUSE_MAX = envint("CELERY_DB_REUSE_MAX", "1000")
# Redelivery of unacknowledged tasks; the sweeper covers anything the broker loses.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", "300")}
# A hand-over to a broker that is down fails fast: the request waits in the database for the
# sweeper instead of holding its agent's HTTP call (the web process never waits on Redis long).
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
CELERY_BROKER_CONNECTION_TIMEOUT = envfloat("CELERY_BROKER_CONNECTION_TIMEOUT", "1")
CELERY_BEAT_SCHEDULE = {
    "sweep-stuck-requests": {"task": "reviewq.tasks.sweep_stuck_requests", "schedule": 15.0},
    "expire-review-items": {"task": "reviewq.tasks.expire_review_items", "schedule": 1.0},
    "deliver-due-webhooks": {"task": "reviewq.tasks.deliver_due_webhooks", "schedule": 2.0},
    "page-sla-breaches": {"task": "reviewq.tasks.page_sla_breaches", "schedule": 15.0},
    # Does nothing unless LEARNING_CYCLE_ENABLED; the training itself runs on the "training" queue.
    "learning-cycle": {"task": "reviewq.tasks.learning_cycle", "schedule": 3600.0},
}

# A shared cache (throttling budgets) when Redis is there; a per-process one otherwise.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
# Requests one agent key may make, e.g. "1000/s", "20000/m" (429 with Retry-After beyond it).
API_RATE_LIMIT = os.getenv("API_RATE_LIMIT", "1000/s")
# Seconds a web process trusts an agent key it has just looked up. Revoking a key in the admin
# takes effect at once in that process, and within this many seconds everywhere else. 0: look
# every call up.
AGENT_KEY_CACHE_SECONDS = envfloat("AGENT_KEY_CACHE_SECONDS", "2")

# --- Pipeline ---
# A request in a working state whose lease has passed is re-enqueued by the sweeper (a working
# pipeline renews its lease as it goes, so only a dead worker's request is swept)...
PIPELINE_LEASE_SECONDS = envint("PIPELINE_LEASE_SECONDS", "180")
# ...and a received one nobody claimed within this many seconds (its hand-over was lost)...
PIPELINE_CLAIM_SECONDS = envint("PIPELINE_CLAIM_SECONDS", "30")
# ...until the pipeline has run this many times for it: then the request fails, visibly, instead
# of being retried forever (an input that makes the pipeline raise, say).
PIPELINE_MAX_RUNS = envint("PIPELINE_MAX_RUNS", "3")
# Webhooks (agents' callbacks, on-call pages): per-attempt timeout; backoff is 1, 2, 4 … s times the scale.
WEBHOOK_TIMEOUT_S = envfloat("WEBHOOK_TIMEOUT_S", "5")
WEBHOOK_BACKOFF_SCALE = envfloat("WEBHOOK_BACKOFF_SCALE", "1")
# Hosts agents' callback_url may name ("hooks.example.com", or ".example.com" for its
# subdomains); empty: any. Redirects are never followed.
WEBHOOK_ALLOWED_HOSTS = envlist("WEBHOOK_ALLOWED_HOSTS", "")
# Whether a webhook may go to a private, loopback or link-local address (the internal network,
# a cloud metadata service): refused by default in production.
WEBHOOK_ALLOW_PRIVATE = envbool("WEBHOOK_ALLOW_PRIVATE", "false" if PRODUCTION else "true")
# A reviewer's claim on an item lapses after this long, so an abandoned item returns to the queue.
REVIEW_CLAIM_SECONDS = envint("REVIEW_CLAIM_SECONDS", "600")
# The largest request body accepted (an agent conversation of 8k tokens is about 40 kB): 413 beyond.
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("MAX_BODY_BYTES", str(2_621_440))
# Where reviewers reach this gateway: on-call pages link to items under it.
PUBLIC_URL = os.getenv("REVIEWQ_PUBLIC_URL", "http://127.0.0.1:8000")
# Email pages go through Django's mail backend: SMTP when EMAIL_HOST is set, else printed to the
# log (the embedded default has no mail server).
EMAIL_HOST = os.getenv("EMAIL_HOST", "")
EMAIL_PORT = envint("EMAIL_PORT", "587")
EMAIL_HOST_USER = os.getenv("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.getenv("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", "true")
EMAIL_TIMEOUT = envint("EMAIL_TIMEOUT", "10")
EMAIL_BACKEND = os.getenv(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
DEFAULT_FROM_EMAIL = os.getenv("DEFAULT_FROM_EMAIL", "reviewq@localhost")
# Longest an agent may ask POST to wait for a final answer.
MAX_WAIT_MS = envint("MAX_WAIT_MS", "30000")
# Task clusters (telemetry/clusters.py): a cluster is a candidate for a specialist adapter with at
# least this many traces and the small model's first proposals right less often than this.
CLUSTER_CANDIDATE_MIN_TRACES = envint("CLUSTER_CANDIDATE_MIN_TRACES", "20")
CLUSTER_CANDIDATE_MAX_ACCURACY = envfloat("CLUSTER_CANDIDATE_MAX_ACCURACY", "0.9")
# Replay calibration: the uncertainty threshold of a promoted adapter keeps the answers it
# releases right at least this often on the held-out rows (reviewq/services/learning.py).
ADAPTER_RELEASE_PRECISION = envfloat("ADAPTER_RELEASE_PRECISION", "0.95")
# The learning cycle (reviewq/services/learning.py ``learning_cycle``; manage.py learning_cycle):
# off by default. When on, the scheduler trains a new adapter for each base (default: the
# cheapest small tool-use model) once this many new trustworthy traces arrived, replays it, and
# promotes it itself only for the tasks (final tool names, or *) ops list, on a gain of at least
# LEARNING_CYCLE_MIN_GAIN in exact answers on the replay and no cluster worse.
LEARNING_CYCLE_ENABLED = envbool("LEARNING_CYCLE_ENABLED", "false")
LEARNING_CYCLE_BASES = [name for name in os.getenv("LEARNING_CYCLE_BASES", "").split(",") if name.strip()]
LEARNING_CYCLE_MIN_NEW_TRACES = envint("LEARNING_CYCLE_MIN_NEW_TRACES", "20")
LEARNING_CYCLE_AUTO_PROMOTE_TASKS = [
    name.strip() for name in os.getenv("LEARNING_CYCLE_AUTO_PROMOTE_TASKS", "").split(",") if name.strip()
]
LEARNING_CYCLE_MIN_GAIN = envfloat("LEARNING_CYCLE_MIN_GAIN", "0.05")
# Default time a held item waits for a human before it expires (fails closed: denied).
REVIEW_DEFAULT_EXPIRY_SECONDS = envint("REVIEW_DEFAULT_EXPIRY_SECONDS", "86400")
# "fake" swaps every local model for the deterministic fake backend (tests, quick demos).
REVIEWQ_MODEL_BACKEND = os.getenv("REVIEWQ_MODEL_BACKEND", "real")
# How long the fake model takes to answer (crash tests, overhead benchmarks).
FAKE_MODEL_DELAY_MS = envfloat("FAKE_MODEL_DELAY_MS", "0")
# Remote models (the LLM tier, openai_compatible servers): per-call timeout and retries on 429/5xx.
LLM_TIMEOUT_S = envfloat("LLM_TIMEOUT_S", "30")
LLM_MAX_RETRIES = envint("LLM_MAX_RETRIES", "3")
# The Anthropic model of the LLM tier is enabled at seeding only when a key is set.
ANTHROPIC_API_KEY = os.getenv("ANTHROPIC_API_KEY", "")
ANTHROPIC_BASE_URL = os.getenv("ANTHROPIC_BASE_URL", "")
# Bearer key for openai_compatible models (llama-server, vLLM); empty: none sent.
OPENAI_COMPATIBLE_API_KEY = os.getenv("OPENAI_COMPATIBLE_API_KEY", "")
# Layers of each local model to offload to a GPU (needs a CUDA build of llama.cpp; -1 = all).
MODEL_GPU_LAYERS = envint("MODEL_GPU_LAYERS", "0")
# llama.cpp threads per model. One core is left for the web process and the database: with every
# core busy elsewhere too, llama.cpp's threads wait on each other and a proposal takes several
# times as long (README, "Threads"). Cores: those this process may run on (a container's cpuset,
# not the host's count).
USABLE_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
MODEL_THREADS = envint("MODEL_THREADS", str(max(1, USABLE_CORES - 1)))
# ...but an evaluation that starts while nothing else on the machine is runnable uses this many
# (every core; README, "Threads"). 0 or MODEL_THREADS: never more.
MODEL_THREADS_WHEN_IDLE = envint("MODEL_THREADS_WHEN_IDLE", str(USABLE_CORES))
# Memory per loaded model for saved KV states (its system prefixes and recent conversations), so a
# conversation's next turn evaluates only its new messages. The 1.5B model's state is 28 KiB per
# token: a 9k-token retail conversation is 250 MiB (bench/conversation_latency.py prints it).
MODEL_STATE_CACHE_MB = envint("MODEL_STATE_CACHE_MB", "2048")

# --- Telemetry ---
# Model calls and finished requests older than this are deleted by `manage.py prune_telemetry`.
TELEMETRY_RETENTION_DAYS = envint("TELEMETRY_RETENTION_DAYS", "90")
# /metrics answers loopback and staff; other scrapers send "Authorization: Bearer <this>". Empty: none.
METRICS_TOKEN = os.getenv("METRICS_TOKEN", "")

# --- Security ---
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if PRODUCTION:
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "True")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "31536000")
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# LOG_FORMAT=json: one JSON object per line with the request id (CI, production); "plain" for humans.
LOG_FORMAT = os.getenv("LOG_FORMAT", "plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "reviewq.runtime.request_logging.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "reviewq.runtime.request_logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    # httpx2 logs every request at INFO: one line per upstream LLM call in observe mode.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx2": {"level": "WARNING"}},
}
