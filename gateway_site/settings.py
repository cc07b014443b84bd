"""Portier's one settings module. Everything comes from environment variables (see .env.example).

Defaults are for development: SQLite in the project directory and Django's in-process cache, so a
single process works with no other server. Set DATABASE_URL and REDIS_URL to share state between
instances. PORTIER_ENV=production refuses to start with the development secret key or DEBUG on.
"""

from __future__ import annotations

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
    "accounts",
    "routing",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "portier.access": {"level": env_str("ACCESS_LOG_LEVEL", "INFO")},
        # httpx logs every upstream request at INFO; the access log already has them.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

# --- Portier -------------------------------------------------------------------------------------
# How often each process checks the cache for a new configuration version (seconds).
PORTIER_CONFIG_POLL_INTERVAL = env_float("PORTIER_CONFIG_POLL_INTERVAL", 0.5)
# Paths the gateway serves itself (each one and everything below it); a route may not shadow them.
PORTIER_RESERVED_PATHS = ("/admin", "/auth", "/health", "/metrics", "/static")
# Percent-encoded slashes/backslashes let a path look like one route to the gateway and another to
# an upstream that decodes them; they are refused unless explicitly allowed.
PORTIER_ALLOW_ENCODED_SLASHES = env_bool("PORTIER_ALLOW_ENCODED_SLASHES", False)
# Upstream connection pool per process.
PORTIER_UPSTREAM_MAX_CONNECTIONS = env_int("PORTIER_UPSTREAM_MAX_CONNECTIONS", 512)
PORTIER_UPSTREAM_KEEPALIVE = env_int("PORTIER_UPSTREAM_KEEPALIVE", 128)
