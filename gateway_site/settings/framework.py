"""Django itself: the environment, secrets, apps, database, cache, static files, logging and
tracing."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from gateway_site.env import env_bool, env_float, env_int, env_list, env_str


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ImproperlyConfigured(f"PORTIER_REDIS_SENTINELS: {address!r} is not host:port")
    return host.strip("[]"), int(port)


BASE_DIR = Path(__file__).resolve().parent.parent.parent

PORTIER_ENV = env_str("PORTIER_ENV", "development")
if PORTIER_ENV not in {"development", "production"}:
    raise ImproperlyConfigured("PORTIER_ENV must be 'development' or 'production'")
PRODUCTION = PORTIER_ENV == "production"

_DEV_SECRET = "portier-development-secret-key-do-not-use-in-production"  # noqa: S105
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET)
DEBUG = env_bool("DEBUG", not PRODUCTION)
if PRODUCTION and (SECRET_KEY == _DEV_SECRET or len(SECRET_KEY) < 32):
    raise ImproperlyConfigured(
        "PORTIER_ENV=production needs SECRET_KEY set to 32+ random characters"
    )
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("PORTIER_ENV=production refuses DEBUG=true")

# The proxy matches routes on the Host header itself; Django's check only guards the admin.
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["*"] if not PRODUCTION else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    # django.contrib.admin, whose modules the served gateway imports on first use.
    "gateway_site.admin_loading.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "simple_history",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "routing",
    "audit",
]

MIDDLEWARE = [
    # First: everything after it (sign-in limits, django-ratelimit) sees the resolved client.
    "gateway_site.client_address.ClientAddressMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before sessions, CSRF and sign-in: a browser's CORS preflight carries no credentials.
    "gateway_site.cors.GatewayApiCorsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Lets configuration history record who made each admin change.
    "simple_history.middleware.HistoryRequestMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so its 503 still passes through every response hook above (headers, cookies).
    "gateway_site.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "gateway_site.urls"
ASGI_APPLICATION = "gateway_site.asgi.application"
AUTH_USER_MODEL = "accounts.User"

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
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'portier.sqlite3'}"),
        conn_max_age=60,
        conn_health_checks=True,
    )
}
# A black-holed database must not hold a worker thread for the OS's TCP timeout (minutes):
# connecting gives up after this many seconds (libpq's minimum is 2). A connect_timeout in
# DATABASE_URL's query string wins.
PORTIER_DB_CONNECT_TIMEOUT = env_int("PORTIER_DB_CONNECT_TIMEOUT", 3)
if PORTIER_DB_CONNECT_TIMEOUT < 2:
    raise ImproperlyConfigured("PORTIER_DB_CONNECT_TIMEOUT must be at least 2 (seconds)")
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", PORTIER_DB_CONNECT_TIMEOUT
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: one server (redis://, rediss:// for TLS), Sentinel, or Cluster ----------------------
REDIS_URL = env_str("REDIS_URL")
# Sentinel: the sentinels (host:port, comma-separated) and the master's name, given here or as
# REDIS_URL's host in django-redis's form (redis://mymaster/0; credentials and database there).
PORTIER_REDIS_SENTINELS = [_host_port(a) for a in env_list("PORTIER_REDIS_SENTINELS")]
PORTIER_REDIS_SENTINEL_MASTER = env_str("PORTIER_REDIS_SENTINEL_MASTER")
PORTIER_REDIS_SENTINEL_PASSWORD = env_str("PORTIER_REDIS_SENTINEL_PASSWORD")
# Cluster: REDIS_URL names any one node; the client finds the others and follows the slots.
PORTIER_REDIS_CLUSTER = env_bool("PORTIER_REDIS_CLUSTER", False)
if PORTIER_REDIS_CLUSTER and PORTIER_REDIS_SENTINELS:
    raise ImproperlyConfigured("Set PORTIER_REDIS_CLUSTER or PORTIER_REDIS_SENTINELS, not both")
if PORTIER_REDIS_CLUSTER and not REDIS_URL:
    raise ImproperlyConfigured("PORTIER_REDIS_CLUSTER needs REDIS_URL naming one of its nodes")
if PORTIER_REDIS_CLUSTER and urlsplit(REDIS_URL).path.strip("/") not in {"", "0"}:
    raise ImproperlyConfigured("A Redis Cluster has database 0 only: REDIS_URL must end in /0")
if (PORTIER_REDIS_SENTINEL_MASTER or PORTIER_REDIS_SENTINEL_PASSWORD) and not (
    PORTIER_REDIS_SENTINELS
):
    raise ImproperlyConfigured(
        "PORTIER_REDIS_SENTINEL_MASTER and _PASSWORD need PORTIER_REDIS_SENTINELS (host:port,...)"
    )
if PORTIER_REDIS_SENTINELS:
    _url = urlsplit(REDIS_URL)
    if REDIS_URL and (_url.port is not None or _url.scheme != "redis"):
        raise ImproperlyConfigured(
            "With PORTIER_REDIS_SENTINELS, REDIS_URL is redis://[:password@]<master name>/<db>: "
            "no port (the sentinels give the master's address), and no rediss:// (Sentinel "
            "over TLS is not supported)"
        )
    _named = _url.hostname if REDIS_URL else None
    PORTIER_REDIS_SENTINEL_MASTER = PORTIER_REDIS_SENTINEL_MASTER or _named or "mymaster"
    if PORTIER_REDIS_SENTINEL_MASTER.lower() != PORTIER_REDIS_SENTINEL_MASTER:
        # Sentinel's names are case-sensitive, and a URL's host is read in lower case.
        raise ImproperlyConfigured("The Sentinel master's name must be in lower case")
    if _named and _named != PORTIER_REDIS_SENTINEL_MASTER:
        raise ImproperlyConfigured(
            "With PORTIER_REDIS_SENTINELS, REDIS_URL's host is the master's name: it says "
            f"{_named!r}, PORTIER_REDIS_SENTINEL_MASTER says {PORTIER_REDIS_SENTINEL_MASTER!r}"
        )
    REDIS_URL = REDIS_URL or f"redis://{PORTIER_REDIS_SENTINEL_MASTER}/0"
PORTIER_REDIS_TOPOLOGY = (
    "cluster" if PORTIER_REDIS_CLUSTER else "sentinel" if PORTIER_REDIS_SENTINELS else "single"
)


def redis_cache_options(
    topology: str, sentinels: list[tuple[str, int]], sentinel_password: str = ""
) -> dict[str, object]:
    """django-redis's OPTIONS for a topology (tests build the same for a Redis of their own)."""
    options: dict[str, object] = {
        # A dead Redis must never hang a request: fail in well under a second.
        "SOCKET_CONNECT_TIMEOUT": env_float("REDIS_CONNECT_TIMEOUT", 0.5),
        "SOCKET_TIMEOUT": env_float("REDIS_SOCKET_TIMEOUT", 0.5),
    }
    if topology == "sentinel":
        sentinel_kwargs = {
            "socket_timeout": options["SOCKET_TIMEOUT"],
            "socket_connect_timeout": options["SOCKET_CONNECT_TIMEOUT"],
        }
        if sentinel_password:
            sentinel_kwargs["password"] = sentinel_password
        options |= {
            "CLIENT_CLASS": "django_redis.client.SentinelClient",
            "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
            "SENTINELS": sentinels,
            "SENTINEL_KWARGS": sentinel_kwargs,
        }
    elif topology == "cluster":
        options |= {
            "CLIENT_CLASS": "routing.redis_topology.ClusterCacheClient",
            "CONNECTION_FACTORY": "routing.redis_topology.ClusterConnectionFactory",
        }
    return options


if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            # A list: with Sentinel, reads go to the master too (django-redis sends the reads
            # of a one-URL string to a replica, which may not have the last write yet).
            "LOCATION": [REDIS_URL],
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "portier"),
            "OPTIONS": redis_cache_options(
                PORTIER_REDIS_TOPOLOGY, PORTIER_REDIS_SENTINELS, PORTIER_REDIS_SENTINEL_PASSWORD
            ),
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "portier",
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "portier"),
        }
    }

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

STATIC_URL = "/static/"
STATIC_ROOT = env_str("STATIC_ROOT") or None
# The admin's static files are served by the app itself (WhiteNoise), straight from the installed
# apps, so no collectstatic step or extra web server is needed.
WHITENOISE_USE_FINDERS = True

if PRODUCTION:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)

# One line per record on stdout: a JSON object (json, the default) or key=value text (console,
# for development). A background thread writes them (gateway_site.logs), so a slow stdout never
# blocks the event loop. Django's, uvicorn's and gunicorn's own loggers go through the same
# handler, so every line has the same format.
LOG_FORMAT = env_str("LOG_FORMAT", "json")
if LOG_FORMAT not in {"json", "console"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'json' or 'console', got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "stdout": {"()": "gateway_site.logs.batched_stdout", "log_format": LOG_FORMAT},
    },
    "root": {"handlers": ["stdout"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "portier.access": {"level": env_str("ACCESS_LOG_LEVEL", "INFO")},
        # httpx logs every upstream request at INFO; the access log already has them.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # Their own handlers (Django's default config, the servers') would write other formats.
        # gunicorn's master never loads Django: its few lines keep gunicorn's format.
        **{
            name: {"handlers": [], "level": "INFO", "propagate": True}
            for name in ("django", "django.server", "uvicorn", "uvicorn.error", "gunicorn.error")
        },
        # uvicorn writes its access line only when this logger has a handler: the gateway's own
        # access log replaces it (gateway_site.serve turns it off; dictConfig would re-enable it).
        "uvicorn.access": {"handlers": [], "propagate": False},
    },
}

# W3C trace context (routing.observe.tracing): the share of new traces marked sampled (flags 01)
# when a request arrives without a valid traceparent; a caller's own decision is always kept.
PORTIER_TRACE_SAMPLE_RATIO = env_float("PORTIER_TRACE_SAMPLE_RATIO", 1.0)
if not 0.0 <= PORTIER_TRACE_SAMPLE_RATIO <= 1.0:
    raise ImproperlyConfigured("PORTIER_TRACE_SAMPLE_RATIO must be between 0 and 1")
# OpenTelemetry spans for the pipeline's stages and the upstream call, exported over OTLP to
# OTEL_EXPORTER_OTLP_ENDPOINT (the SDK reads the standard OTEL_* variables). Needs the `otel` extra.
PORTIER_OTEL_ENABLED = env_bool("PORTIER_OTEL_ENABLED", False)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


if PORTIER_OTEL_ENABLED and not (
    _installed("opentelemetry.sdk.trace") and _installed("opentelemetry.exporter.otlp.proto.http")
):
    raise ImproperlyConfigured(
        "PORTIER_OTEL_ENABLED=true needs OpenTelemetry: pip install 'portier[otel]' "
        "(opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http), or unset it"
    )
