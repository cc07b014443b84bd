"""Header rules shared by the stages that edit headers on the way in and on the way out.

Which client headers never reach an upstream, by family rather than by example:

- hop-by-hop headers and any header the Connection header names;
- identity headers: the gateway alone says who the caller is. Its own namespace (`X-User-*`)
  and the ones other gateways and auth proxies set (Kong's `X-Consumer-*`, `X-Credential-*`,
  `X-Anonymous-Consumer`; `X-Authenticated-*`; oauth2-proxy's `X-Forwarded-User`/`-Email`/...,
  `X-Auth-Request-*`; ALB, IAP, Azure and Cloudflare Access headers; `Remote-User`), plus the
  prefixes in PORTIER_IDENTITY_HEADER_PREFIXES: an upstream written for another gateway trusts
  those, and a client must not be able to write them;
- `Proxy` (httpoxy: CGI-style upstreams turn it into HTTP_PROXY and send their own calls there);
- from a client that is not a trusted proxy, the headers only a proxy may vouch for
  (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`, ...; the transform stage then sets its own), and
  the path overrides some frameworks honour (`X-Original-URL`), which would let a client reach a
  path other than the one matched.

Names are compared in lower case (servers hand them over so) with `_` read as `-`, because a
framework behind the gateway may fold `X_User_Id` into `X-User-Id`.
"""

from __future__ import annotations

from functools import lru_cache

from routing.proxy.context import Headers

__all__ = [
    "ALWAYS_DROPPED",
    "HOP_BY_HOP",
    "IDENTITY_NAMES",
    "IDENTITY_PREFIXES",
    "PROXY_NAMES",
    "PROXY_PREFIXES",
    "connection_named",
    "drop_hop_by_hop",
    "identity_prefixes",
]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
IDENTITY_PREFIXES = (
    b"x-user-",
    b"x-consumer-",
    b"x-credential-",
    b"x-authenticated-",
    b"x-auth-request-",
    b"x-amzn-oidc-",
    b"x-goog-authenticated-user-",
    b"x-ms-client-principal",
    b"cf-access-",
)
IDENTITY_NAMES = frozenset(
    {
        b"x-anonymous-consumer",
        b"x-userinfo",
        b"x-remote-user",
        b"remote-user",
        b"x-forwarded-user",
        b"x-forwarded-email",
        b"x-forwarded-groups",
        b"x-forwarded-preferred-username",
        b"x-forwarded-access-token",
        b"x-apigateway-api-userinfo",
        b"x-endpoint-api-userinfo",
    }
)
ALWAYS_DROPPED = frozenset({b"proxy", b"x-original-url", b"x-rewrite-url", b"x-original-uri"})
# Believed only from a trusted proxy (routing.proxy.client_ip); from anyone else, replaced.
PROXY_PREFIXES = (b"x-forwarded-",)
PROXY_NAMES = frozenset(
    {
        b"forwarded",
        b"x-real-ip",
        b"x-client-ip",
        b"true-client-ip",
        b"x-cluster-client-ip",
        b"x-original-forwarded-for",
    }
)


@lru_cache(maxsize=8)
def identity_prefixes(extra: tuple[str, ...]) -> tuple[bytes, ...]:
    """The built-in identity prefixes plus the configured ones (a tuple for bytes.startswith)."""
    return IDENTITY_PREFIXES + tuple(prefix.encode("latin-1") for prefix in extra)


def connection_named(headers: Headers) -> frozenset[bytes]:
    """The header names the Connection header lists (hop-by-hop by the client's own word)."""
    return frozenset(
        token.strip().lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    )


def drop_hop_by_hop(headers: Headers, drop: frozenset[bytes] = frozenset()) -> Headers:
    """Headers minus hop-by-hop ones, minus any header the Connection header names."""
    removed = HOP_BY_HOP | drop | connection_named(headers)
    return [(name, value) for name, value in headers if name not in removed]
