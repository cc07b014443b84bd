"""Authenticate: who is calling, from a Bearer JWT or an API key.

Credentials: `Authorization: Bearer <jwt>`, `Authorization: ApiKey <key>` or `X-API-Key: <key>`.
A request without credentials goes on anonymously (the authorize stage decides whether that is
enough); credentials that are present must be valid, on every route.

JWTs are verified without I/O. API keys come from this process's copy or the cache, and from the
database only on a miss: when that misses and the database is down, the answer is 503
identity_unavailable (the key may be valid, so not 401).

Both then meet the deny-set (accounts.denylist), this process's in-memory copy: a deactivated
user's tokens and keys, and tokens issued before the user's "sign out everywhere", are refused
on every instance within the poll interval, for the cost of two dictionary lookups.
"""

from __future__ import annotations

import logging
import time

from accounts.denylist import deny_set
from accounts.services import ApiKeysUnavailable, api_key_lookup, api_key_touch
from routing.hot_settings import hot_settings
from routing.proxy.context import GatewayError, Identity, RequestContext
from routing.proxy.tokens import TokenExpired, TokenInvalid, verifier

__all__ = ["authenticate", "identify"]

logger = logging.getLogger("portier.identity")


def _unauthorized(code: str, message: str, scheme: str = "Bearer") -> GatewayError:
    challenge = f'{scheme} realm="portier"'
    if code != "missing_credentials":
        challenge += f', error="{"invalid_token" if scheme == "Bearer" else code}"'
    return GatewayError(401, code, message, [(b"www-authenticate", challenge.encode())])


async def authenticate(ctx: RequestContext) -> None:
    ctx.identity = await identify(ctx.header(b"authorization"), ctx.header(b"x-api-key"))


async def identify(authorization: bytes | None, api_key: bytes | None) -> Identity | None:
    """The caller named by these headers; None without gateway credentials; GatewayError (401)
    for credentials that are not valid, 503 when an API key cannot be checked. The gateway's own
    APIs (the registry) use it too."""
    if authorization is not None:
        scheme, _, credential = authorization.decode("latin-1").strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return await _from_jwt(credential.strip())
        if scheme == "apikey":
            return await _from_api_key(credential.strip())
        if api_key is None:
            # Another scheme (Basic, ...) is the upstream's business: not gateway credentials.
            return None
    if api_key is not None:
        return await _from_api_key(api_key.decode("latin-1").strip())
    return None


async def _from_jwt(raw: str) -> Identity:
    try:
        claims = await verifier.verify(raw)
    except TokenExpired:
        raise _unauthorized("token_expired", "The token has expired.") from None
    except TokenInvalid as exc:
        logger.info("invalid token refused: %s", exc)  # the reason stays in the log
        raise _unauthorized("invalid_token", "The token is not valid.") from None
    subject = _subject(claims.get(hot_settings.PORTIER_JWT_USER_ID_CLAIM))
    email = claims.get(hot_settings.PORTIER_JWT_EMAIL_CLAIM)
    roles = _roles(claims.get(hot_settings.PORTIER_JWT_ROLES_CLAIM))
    # These values become upstream headers: refuse what could not be sent as one, and any claim
    # of the wrong type (a client's token must never be guessed at, nor become a 500).
    if email is None:
        email = ""
    if (
        subject is None
        or roles is None
        or not isinstance(email, str)
        or not all(_header_safe(v) for v in (subject, email, *roles))
    ):
        logger.info("token with unusable identity claims refused")
        raise _unauthorized("invalid_token", "The token is not valid.")
    if deny_set.current.refuses_token(subject, claims.get("iat")):
        logger.info("token of a deactivated or signed-out user refused (user %s)", subject)
        raise _unauthorized("invalid_token", "The token is not valid.")
    return Identity(
        subject=subject,
        email=email,
        roles=frozenset(roles),
        primary_role=roles[0] if roles else "",
        method="jwt",
    )


def _subject(value: object) -> str | None:
    """The caller's id: a non-empty string or an integer (not a bool, float, list or object)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _roles(value: object) -> list[str] | None:
    """Roles from a claim that may be a list of strings (ours) or a single string (the seed's
    `role`); absent means none; None for any other shape."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v for v in value if v]
    return None


def _header_safe(value: str) -> bool:
    return value.isprintable() and len(value) <= 256


async def _from_api_key(key: str) -> Identity:
    try:
        record = await api_key_lookup(key)
    except ApiKeysUnavailable:
        raise GatewayError(
            503,
            "identity_unavailable",
            "The API key cannot be checked right now; try again shortly.",
            [(b"retry-after", b"5")],
        ) from None
    if (
        record is None
        or record.revoked
        or (record.expires_at is not None and record.expires_at <= time.time())
        or deny_set.current.refuses_key(str(record.owner_id))
    ):
        raise _unauthorized("invalid_api_key", "The API key is not valid.", scheme="ApiKey")
    api_key_touch(record.prefix)
    return Identity(
        subject=str(record.owner_id),
        email=record.email,
        roles=frozenset(record.roles),
        primary_role=record.roles[0] if record.roles else "",
        method="api_key",
        key_prefix=record.prefix,
    )
