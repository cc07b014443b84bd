"""Identity: JWT verification and issuing, API keys, the management API (DRF, its schema) and
the failed sign-in limits."""

from __future__ import annotations

import re
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured

from gateway_site.env import env_bool, env_float, env_int, env_str
from gateway_site.settings.framework import REDIS_URL, SECRET_KEY

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
