"""Portier's one settings module. Everything comes from environment variables (see .env.example).

Defaults are for development: SQLite in the project directory and Django's in-process cache, so a
single process works with no other server. Set DATABASE_URL and REDIS_URL to share state between
instances. PORTIER_ENV=production refuses to start with the development secret key or DEBUG on.
"""

from __future__ import annotations

import importlib.util
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from gateway_site.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

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
    "django.contrib.admin",
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

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "portier"),
            "OPTIONS": {
                # A dead Redis must never hang a request: fail in well under a second.
                "SOCKET_CONNECT_TIMEOUT": env_float("REDIS_CONNECT_TIMEOUT", 0.5),
                "SOCKET_TIMEOUT": env_float("REDIS_SOCKET_TIMEOUT", 0.5),
            },
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

# --- Portier -------------------------------------------------------------------------------------
# How often each process checks the cache for a new configuration version (seconds): one Redis
# GET per process per interval (2/s each at 0.5), and a saved change is served everywhere within
# the interval plus a load (under a second, tests/faults/test_config_propagation.py).
PORTIER_CONFIG_POLL_INTERVAL = env_float("PORTIER_CONFIG_POLL_INTERVAL", 0.5)
if PORTIER_CONFIG_POLL_INTERVAL <= 0:
    raise ImproperlyConfigured("PORTIER_CONFIG_POLL_INTERVAL must be above 0")
# Deadlines for receiving a request (gateway_site.protocol), so a slow client cannot hold a
# connection forever: the whole head within HEADER_TIMEOUT seconds (else 408), the body within
# BODY_TIMEOUT seconds after the head plus one second per BODY_MIN_RATE bytes received.
PORTIER_CLIENT_HEADER_TIMEOUT = env_float("PORTIER_CLIENT_HEADER_TIMEOUT", 10.0)
PORTIER_CLIENT_BODY_TIMEOUT = env_float("PORTIER_CLIENT_BODY_TIMEOUT", 30.0)
PORTIER_CLIENT_BODY_MIN_RATE = env_float("PORTIER_CLIENT_BODY_MIN_RATE", 500.0)
for _name, _value in (
    ("PORTIER_CLIENT_HEADER_TIMEOUT", PORTIER_CLIENT_HEADER_TIMEOUT),
    ("PORTIER_CLIENT_BODY_TIMEOUT", PORTIER_CLIENT_BODY_TIMEOUT),
    ("PORTIER_CLIENT_BODY_MIN_RATE", PORTIER_CLIENT_BODY_MIN_RATE),
):
    if not _value > 0:  # also refuses nan
        raise ImproperlyConfigured(f"{_name} must be greater than 0, got {_value!r}")
# Size limits of a request (gateway_site.protocol, routing.proxy.stages.forward), NGINX-like:
# URL -> 414, header count or bytes -> 431, body -> 413 (a route may set its own body limit; the
# gateway's own paths also stay within Django's DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MiB). A chunked
# upload up to CHUNKED_BUFFER_BYTES is read whole and forwarded with a Content-Length.
PORTIER_MAX_URL_BYTES = env_int("PORTIER_MAX_URL_BYTES", 8 * 1024)
PORTIER_MAX_HEADER_COUNT = env_int("PORTIER_MAX_HEADER_COUNT", 100)
PORTIER_MAX_HEADER_BYTES = env_int("PORTIER_MAX_HEADER_BYTES", 32 * 1024)
PORTIER_MAX_BODY_BYTES = env_int("PORTIER_MAX_BODY_BYTES", 10 * 1024 * 1024)
PORTIER_CHUNKED_BUFFER_BYTES = env_int("PORTIER_CHUNKED_BUFFER_BYTES", 1024 * 1024)
# The largest JSON body a route's body transform reads and rewrites (else 413).
PORTIER_TRANSFORM_BODY_BYTES = env_int("PORTIER_TRANSFORM_BODY_BYTES", 1024 * 1024)
# The largest answer a composite route reads from each of its backends (past it, that backend
# failed).
PORTIER_COMPOSITE_MAX_BYTES = env_int("PORTIER_COMPOSITE_MAX_BYTES", 1024 * 1024)
for _name, _value in (
    ("PORTIER_MAX_URL_BYTES", PORTIER_MAX_URL_BYTES),
    ("PORTIER_MAX_HEADER_COUNT", PORTIER_MAX_HEADER_COUNT),
    ("PORTIER_MAX_HEADER_BYTES", PORTIER_MAX_HEADER_BYTES),
    ("PORTIER_MAX_BODY_BYTES", PORTIER_MAX_BODY_BYTES),
    ("PORTIER_TRANSFORM_BODY_BYTES", PORTIER_TRANSFORM_BODY_BYTES),
    ("PORTIER_COMPOSITE_MAX_BYTES", PORTIER_COMPOSITE_MAX_BYTES),
):
    if _value < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1, got {_value!r}")
if PORTIER_CHUNKED_BUFFER_BYTES < 0:
    raise ImproperlyConfigured(
        f"PORTIER_CHUNKED_BUFFER_BYTES must be 0 (always stream) or more, got "
        f"{PORTIER_CHUNKED_BUFFER_BYTES!r}"
    )
# Server-sent events (text/event-stream answers): once the answer's head has come, the service's
# read timeout gives way to this one, the longest silence a stream may keep (routing.upstream.
# transport): a healthy stream that sends an event or a heartbeat now and then is never cut.
PORTIER_STREAM_IDLE_TIMEOUT = env_float("PORTIER_STREAM_IDLE_TIMEOUT", 300.0)
if PORTIER_STREAM_IDLE_TIMEOUT <= 0:
    raise ImproperlyConfigured(
        f"PORTIER_STREAM_IDLE_TIMEOUT must be more than 0, got {PORTIER_STREAM_IDLE_TIMEOUT!r}"
    )
# The largest WebSocket message relayed, either way (gateway_site.ws_protocol for the client's,
# routing.proxy.websocket for the upstream's): a bigger one closes the connection with 1009.
PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES = env_int("PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES", 1024 * 1024)
if PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES < 1:
    raise ImproperlyConfigured(
        "PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES must be at least 1, got "
        f"{PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES!r}"
    )
# Paths the gateway serves itself (each one and everything below it); a route may not shadow them.
PORTIER_RESERVED_PATHS = (
    "/admin",
    "/api-docs",
    "/auth",
    "/health",
    "/metrics",
    "/registry",
    "/static",
)
# How often each process rebuilds its view of target health and registered instances from the
# cache (seconds): also how soon a circuit opened by one process is honoured by the others.
PORTIER_HEALTH_SYNC_INTERVAL = env_float("PORTIER_HEALTH_SYNC_INTERVAL", 0.5)
# The role (group) whose API keys or tokens may register instances over /registry/.
PORTIER_REGISTRAR_ROLE = env_str("PORTIER_REGISTRAR_ROLE", "registrar")
# Who may read the operator endpoints, which show internal addresses (/health/services, /metrics):
# callers from these networks (CIDRs), or with `Authorization: Bearer <PORTIER_OPS_TOKEN>`.
# Loopback only by default: behind a load balancer every client arrives from its private address.
PORTIER_OPS_NETWORKS = env_list("PORTIER_OPS_NETWORKS", ["127.0.0.0/8", "::1/128"])
PORTIER_OPS_TOKEN = env_str("PORTIER_OPS_TOKEN")
# Prometheus metrics at /metrics (operators only, as above). With several worker processes
# (gunicorn), prometheus-client's multiprocess mode keeps each process's values in files in this
# directory and /metrics sums them; gateway_site/gunicorn.conf.py sets it to a fresh directory
# when unset and empties it at start. It must be in the environment before the process starts
# (prometheus-client reads it at import). Unset: one process, values in memory.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR and not Path(PROMETHEUS_MULTIPROC_DIR).is_dir():
    raise ImproperlyConfigured("PROMETHEUS_MULTIPROC_DIR must name an existing directory")
# Percent-encoded slashes/backslashes let a path look like one route to the gateway and another to
# an upstream that decodes them; they are refused unless explicitly allowed.
PORTIER_ALLOW_ENCODED_SLASHES = env_bool("PORTIER_ALLOW_ENCODED_SLASHES", False)
# Upstream connection pool per process.
PORTIER_UPSTREAM_MAX_CONNECTIONS = env_int("PORTIER_UPSTREAM_MAX_CONNECTIONS", 512)
PORTIER_UPSTREAM_KEEPALIVE = env_int("PORTIER_UPSTREAM_KEEPALIVE", 128)
# Seconds an idle upstream connection is kept for reuse. Keep it below the upstreams' own idle
# timeout (uvicorn and Node: 5 s): an upstream that closes a connection just as the gateway
# reuses it fails that request, and a POST is not retried.
PORTIER_UPSTREAM_KEEPALIVE_EXPIRY = env_float("PORTIER_UPSTREAM_KEEPALIVE_EXPIRY", 4.0)

# `manage.py audit_purge` (run it daily from cron) deletes audit rows older than this many days.
PORTIER_AUDIT_RETENTION_DAYS = env_int("PORTIER_AUDIT_RETENTION_DAYS", 90)
if PORTIER_AUDIT_RETENTION_DAYS < 1:
    raise ImproperlyConfigured("PORTIER_AUDIT_RETENTION_DAYS must be at least 1")
# Seconds an audited request waits for its row before 503 audit_unavailable (a locked or unreachable
# database); the writing connection is given the same lock/statement timeout.
PORTIER_AUDIT_WRITE_TIMEOUT = env_float("PORTIER_AUDIT_WRITE_TIMEOUT", 2.0)
if not 0 < PORTIER_AUDIT_WRITE_TIMEOUT <= 60:
    raise ImproperlyConfigured("PORTIER_AUDIT_WRITE_TIMEOUT must be above 0 and at most 60")

# Header names with "_" are dropped before forwarding, as NGINX does: a framework behind the
# gateway may fold X_User_Id into X-User-Id. Allow them only if every upstream keeps them apart.
PORTIER_ALLOW_UNDERSCORE_HEADERS = env_bool("PORTIER_ALLOW_UNDERSCORE_HEADERS", False)
# Header-name prefixes an upstream treats as identity (e.g. x-acme-): stripped from every client
# request, like X-User-*, X-Consumer-* and the other built-in families (routing/proxy/headers.py).
PORTIER_IDENTITY_HEADER_PREFIXES = tuple(
    prefix.lower().replace("_", "-") for prefix in env_list("PORTIER_IDENTITY_HEADER_PREFIXES")
)
for _prefix in PORTIER_IDENTITY_HEADER_PREFIXES:
    if not all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^`|~") for c in _prefix):
        raise ImproperlyConfigured(
            f"PORTIER_IDENTITY_HEADER_PREFIXES: {_prefix!r} is not a header name prefix"
        )

# --- Identity: JWT and API keys ------------------------------------------------------------------
# HS256 with a shared secret (tokens from a separate auth service, or from /auth/), or RS256/ES256
# with a public key (PEM) or a JWKS URL.
PORTIER_JWT_ALGORITHM = env_str("PORTIER_JWT_ALGORITHM", "HS256")
if PORTIER_JWT_ALGORITHM not in {
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
    "ES512",
}:
    raise ImproperlyConfigured(
        "PORTIER_JWT_ALGORITHM must be HS256/384/512, RS256/384/512 or ES256/384/512"
    )
# HS*: the shared secret (defaults to SECRET_KEY). RS/ES: the private key, only needed to
# issue tokens at /auth/.
PORTIER_JWT_SIGNING_KEY = env_str("PORTIER_JWT_SIGNING_KEY") or (
    SECRET_KEY if PORTIER_JWT_ALGORITHM.startswith("HS") else ""
)
PORTIER_JWT_VERIFYING_KEY = env_str("PORTIER_JWT_VERIFYING_KEY").replace("\\n", "\n")
PORTIER_JWT_JWKS_URL = env_str("PORTIER_JWT_JWKS_URL")
# Seconds between two JWKS fetches caused by unknown key ids (a flood of random kids fetches once).
PORTIER_JWT_JWKS_MIN_REFRESH = env_float("PORTIER_JWT_JWKS_MIN_REFRESH", 30.0)
PORTIER_JWT_ISSUER = env_str("PORTIER_JWT_ISSUER") or None
PORTIER_JWT_AUDIENCE = env_str("PORTIER_JWT_AUDIENCE") or None
PORTIER_JWT_LEEWAY = env_float("PORTIER_JWT_LEEWAY", 0.0)
# Which claims carry the caller: tokens of another issuer may say userId / role instead.
PORTIER_JWT_USER_ID_CLAIM = env_str("PORTIER_JWT_USER_ID_CLAIM", "user_id")
PORTIER_JWT_EMAIL_CLAIM = env_str("PORTIER_JWT_EMAIL_CLAIM", "email")
PORTIER_JWT_ROLES_CLAIM = env_str("PORTIER_JWT_ROLES_CLAIM", "roles")
# Require token_type "access" (refresh tokens are refused); turn off for issuers without the claim.
PORTIER_JWT_REQUIRE_TOKEN_TYPE = env_bool("PORTIER_JWT_REQUIRE_TOKEN_TYPE", True)
# The role that admin-only policies require.
PORTIER_ADMIN_ROLE = env_str("PORTIER_ADMIN_ROLE", "admin")
# Seconds a process trusts its own copy of an API key before asking Redis again: the bound on how
# long a revoked key keeps working on an instance.
PORTIER_API_KEY_LOCAL_TTL = env_float("PORTIER_API_KEY_LOCAL_TTL", 1.0)

SIMPLE_JWT = {
    "ALGORITHM": PORTIER_JWT_ALGORITHM,
    "SIGNING_KEY": PORTIER_JWT_SIGNING_KEY,
    "VERIFYING_KEY": PORTIER_JWT_VERIFYING_KEY,
    "ISSUER": PORTIER_JWT_ISSUER,
    "AUDIENCE": PORTIER_JWT_AUDIENCE,
    "LEEWAY": PORTIER_JWT_LEEWAY,
    "USER_ID_CLAIM": PORTIER_JWT_USER_ID_CLAIM,
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int("PORTIER_ACCESS_TOKEN_SECONDS", 900)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env_int("PORTIER_REFRESH_TOKEN_SECONDS", 86400)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "gateway_site.errors.json_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The management API's OpenAPI schema (/admin/api/schema/) and docs page (/admin/api/docs/), whose
# Swagger UI files ship in drf-spectacular-sidecar and are served by the app: no CDN.
SPECTACULAR_SETTINGS = {
    "TITLE": "Portier management API",
    "DESCRIPTION": "The gateway's configuration, API keys, audit trail and configuration history: "
    "the same models, validation and publish as the Django admin.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "PREPROCESSING_HOOKS": ["routing.api.schema.management_only"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No call to swagger.io's online validator either.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# Failed sign-ins (/auth/token and the admin's login) counted three ways, as django-axes and
# Keycloak do: per username and client IP (the tight bound), per username from any IP (higher: a
# correct password from a new IP still works while others attack the account) and per IP for any
# username (higher still: an office behind one NAT is not locked out by one person's typos).
PORTIER_LOGIN_FAILURE_RATE = env_str("PORTIER_LOGIN_FAILURE_RATE", "5/15m")
PORTIER_LOGIN_FAILURE_RATE_USER = env_str("PORTIER_LOGIN_FAILURE_RATE_USER", "20/15m")
PORTIER_LOGIN_FAILURE_RATE_IP = env_str("PORTIER_LOGIN_FAILURE_RATE_IP", "100/15m")
for _name, _rate in (
    ("PORTIER_LOGIN_FAILURE_RATE", PORTIER_LOGIN_FAILURE_RATE),
    ("PORTIER_LOGIN_FAILURE_RATE_USER", PORTIER_LOGIN_FAILURE_RATE_USER),
    ("PORTIER_LOGIN_FAILURE_RATE_IP", PORTIER_LOGIN_FAILURE_RATE_IP),
):
    if not re.fullmatch(r"[1-9][0-9]*/[0-9]*[smhd]", _rate):
        raise ImproperlyConfigured(f"{_name} must look like 5/15m (count/period), got {_rate!r}")
RATELIMIT_USE_CACHE = "default"
# django-ratelimit warns about the in-process cache; it is atomic within the one process it serves.
SILENCED_SYSTEM_CHECKS = [] if REDIS_URL else ["django_ratelimit.E003", "django_ratelimit.W001"]

# --- Rate limits and load shedding ---------------------------------------------------------------
# Proxies in front of Portier whose X-Forwarded-For is believed (CIDRs, comma-separated). Empty:
# the socket peer is the client, whatever the header says.
PORTIER_TRUSTED_PROXIES = env_list("PORTIER_TRUSTED_PROXIES")
# async: native redis.asyncio calls from the event loop; thread: django-ratelimit's get_usage
# through django-redis, offloaded to a thread. Both count the same keys (bench/ compares them).
# Without Redis, django-ratelimit counts in the in-process cache (one process only).
PORTIER_RATELIMIT_BACKEND = env_str("PORTIER_RATELIMIT_BACKEND", "async")
if PORTIER_RATELIMIT_BACKEND not in {"async", "thread"}:
    raise ImproperlyConfigured("PORTIER_RATELIMIT_BACKEND must be 'async' or 'thread'")
PORTIER_RATELIMIT_REDIS_URL = env_str("PORTIER_RATELIMIT_REDIS_URL", REDIS_URL)
# When Redis cannot count: open = serve (logged, counted), closed = 503 rate_limit_unavailable.
PORTIER_RATELIMIT_FAIL = env_str("PORTIER_RATELIMIT_FAIL", "open")
if PORTIER_RATELIMIT_FAIL not in {"open", "closed"}:
    raise ImproperlyConfigured("PORTIER_RATELIMIT_FAIL must be 'open' or 'closed'")
# Seconds to wait for Redis, and to skip it after a failure before trying again.
PORTIER_RATELIMIT_REDIS_TIMEOUT = env_float("PORTIER_RATELIMIT_REDIS_TIMEOUT", 0.25)
PORTIER_RATELIMIT_RETRY_AFTER_FAILURE = env_float("PORTIER_RATELIMIT_RETRY_AFTER_FAILURE", 1.0)

# The shared response cache (a route's `cache`): seconds to wait for Redis, and how long a miss
# waits for another request already fetching the same answer (here or on another instance)
# before it asks the upstream itself.
PORTIER_CACHE_REDIS_TIMEOUT = env_float("PORTIER_CACHE_REDIS_TIMEOUT", 0.25)
PORTIER_CACHE_COALESCE_WAIT = env_float("PORTIER_CACHE_COALESCE_WAIT", 10.0)
if PORTIER_CACHE_COALESCE_WAIT < 0:
    raise ImproperlyConfigured("PORTIER_CACHE_COALESCE_WAIT must be 0 or more (seconds)")
