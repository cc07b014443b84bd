"""Bearer JWT verification with simplejwt's token machinery, without I/O per request.

- The algorithm is fixed by settings and is the only one PyJWT accepts, so `alg: none` and HS/RS
  key confusion fail. Signature, exp, nbf, iss and aud (when configured) are checked by simplejwt's
  TokenBackend; the token type ("access") by its AccessToken.
- JWKS: keys are fetched asynchronously and cached per process; an unknown `kid` triggers at most
  one fetch per PORTIER_JWT_JWKS_MIN_REFRESH seconds, so random kids cannot flood the issuer.
- A verified token's claims are kept until the token expires (bounded LRU): verifying the same
  token again only costs a dictionary lookup.
- Registered claims of the wrong type (`exp` as a string, `iat` as an object, `aud` as a number...)
  make the token invalid, whatever the libraries below would do with them: a client's token can
  never turn into a 500.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from typing import Any

import httpx
import jwt
from rest_framework_simplejwt.backends import TokenBackend
from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenBackendError, TokenError
from rest_framework_simplejwt.tokens import AccessToken

from routing.hot_settings import hot_settings

__all__ = ["TokenExpired", "TokenInvalid", "verifier"]

logger = logging.getLogger("portier.tokens")

_VERIFIED_CACHE_SIZE = 10_000


class TokenInvalid(Exception):
    """The token cannot be trusted (the reason is logged, never told to the client)."""


class TokenExpired(TokenInvalid):
    """The token was valid once and has expired."""


class _GatewayAccessToken(AccessToken):
    """simplejwt's AccessToken, verified with the backend (key) chosen for this token.

    A `jti` is not required: tokens from another issuer need not carry one.
    """

    def __init__(self, token: str, backend: TokenBackend, check_type: bool) -> None:
        self._backend = backend
        self._check_type = check_type
        super().__init__(token)  # type: ignore[arg-type]

    def get_token_backend(self) -> TokenBackend:
        return self._backend

    def verify(self) -> None:
        self.check_exp()
        if self._check_type:
            self.verify_token_type()


class _Jwks:
    """The issuer's public keys by `kid`, fetched off the request path's critical section."""

    def __init__(self, url: str, algorithm: str) -> None:
        self.url = url
        self.algorithm = algorithm
        self.backends: dict[str, TokenBackend] = {}
        self.fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def backend_for(self, kid: str | None) -> TokenBackend:
        if kid is not None and kid in self.backends:
            return self.backends[kid]
        async with self._lock:
            if kid not in self.backends and (
                time.monotonic() - self.fetched_at >= hot_settings.PORTIER_JWT_JWKS_MIN_REFRESH
            ):
                await self._fetch()
        backend = self.backends.get(kid) if kid is not None else None
        if backend is None:
            raise TokenInvalid(f"no JWKS key for kid {kid!r}")
        return backend

    async def _fetch(self) -> None:
        self.fetched_at = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
                response = await client.get(self.url)
                response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json()).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
            logger.warning("JWKS fetch from %s failed: %s", self.url, exc)
            return
        self.backends = {
            key.key_id: _backend(self.algorithm, key.key) for key in keys if key.key_id
        }
        logger.info("JWKS loaded %d keys from %s", len(self.backends), self.url)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_claim_types(claims: dict[str, Any]) -> None:
    """TokenInvalid unless every registered claim present has its RFC 7519 type (exp required).
    PyJWT accepts `"exp": "1700000000"` (it calls int()), simplejwt then fails on it."""
    if not _is_number(claims.get("exp")):
        raise TokenInvalid("exp is missing or not a number")
    for name in ("nbf", "iat"):
        if name in claims and not _is_number(claims[name]):
            raise TokenInvalid(f"{name} is not a number")
    for name in ("iss", "sub", "jti", "token_type"):
        if name in claims and not isinstance(claims[name], str):
            raise TokenInvalid(f"{name} is not a string")
    audience = claims.get("aud", "")
    if not isinstance(audience, str) and not (
        isinstance(audience, list) and all(isinstance(item, str) for item in audience)
    ):
        raise TokenInvalid("aud is not a string or a list of strings")


def _backend(algorithm: str, key: Any) -> TokenBackend:
    return TokenBackend(
        algorithm,
        signing_key=key if algorithm.startswith("HS") else None,
        verifying_key=key,
        audience=hot_settings.PORTIER_JWT_AUDIENCE,
        issuer=hot_settings.PORTIER_JWT_ISSUER,
        leeway=hot_settings.PORTIER_JWT_LEEWAY,
    )


class TokenVerifier:
    """Verifies access tokens for the identity stage; one per process, built from settings."""

    def __init__(self) -> None:
        self._configured_from: tuple[Any, ...] | None = None
        self._verified: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def _configure(self) -> None:
        algorithm = hot_settings.PORTIER_JWT_ALGORITHM
        source = (
            algorithm,
            hot_settings.PORTIER_JWT_SIGNING_KEY,
            hot_settings.PORTIER_JWT_VERIFYING_KEY,
            hot_settings.PORTIER_JWT_JWKS_URL,
            hot_settings.PORTIER_JWT_ISSUER,
            hot_settings.PORTIER_JWT_AUDIENCE,
            hot_settings.PORTIER_JWT_LEEWAY,
        )
        if source == self._configured_from:
            return
        self._configured_from = source
        self._verified.clear()
        self._jwks = (
            _Jwks(hot_settings.PORTIER_JWT_JWKS_URL, algorithm)
            if hot_settings.PORTIER_JWT_JWKS_URL and not algorithm.startswith("HS")
            else None
        )
        key = (
            hot_settings.PORTIER_JWT_SIGNING_KEY
            if algorithm.startswith("HS")
            else hot_settings.PORTIER_JWT_VERIFYING_KEY
        )
        self._static = _backend(algorithm, key) if key and self._jwks is None else None

    async def verify(self, raw: str) -> dict[str, Any]:
        """The claims of a valid access token, or TokenInvalid / TokenExpired."""
        self._configure()
        now = time.time()
        hit = self._verified.get(raw)
        if hit is not None:
            expires, claims = hit
            if now < expires:
                self._verified.move_to_end(raw)
                return claims
            del self._verified[raw]
            raise TokenExpired("token expired")
        backend = await self._backend_for(raw)
        try:
            token = _GatewayAccessToken(
                raw, backend, check_type=hot_settings.PORTIER_JWT_REQUIRE_TOKEN_TYPE
            )
        except ExpiredTokenError:
            # The signature passed (PyJWT checks it before exp): a malformed claim is still an
            # invalid token, not an expired one (`"exp": true` reads as 1970 otherwise).
            _check_claim_types(jwt.decode(raw, options={"verify_signature": False}))
            raise TokenExpired("token expired") from None
        except (TokenError, TokenBackendError) as exc:
            raise TokenInvalid(str(exc)) from None
        except Exception as exc:  # a claim the libraries choke on (e.g. exp far past year 9999)
            raise TokenInvalid(f"unreadable claims: {type(exc).__name__}") from None
        claims = dict(token.payload)
        _check_claim_types(claims)
        expires = float(claims["exp"]) + hot_settings.PORTIER_JWT_LEEWAY
        # Once exp, nbf and the signature passed, only time can invalidate the token: exp.
        self._verified[raw] = (expires, claims)
        if len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    async def _backend_for(self, raw: str) -> TokenBackend:
        if self._jwks is not None:
            try:
                kid = jwt.get_unverified_header(raw).get("kid")
            except jwt.PyJWTError as exc:
                raise TokenInvalid(f"unreadable header: {exc}") from None
            return await self._jwks.backend_for(kid)
        if self._static is None:
            raise TokenInvalid("no JWT verification key is configured")
        return self._static


verifier = TokenVerifier()
