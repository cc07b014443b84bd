"""Stage 5, transform: the path and headers the upstream receives.

Also home of `check_framing`, which runs before matching: a request whose length is ambiguous
(Content-Length with Transfer-Encoding, or disagreeing Content-Lengths) is how request smuggling
starts, so it is refused before anything is forwarded, whatever the HTTP parser let through.
"""

from __future__ import annotations

import re

from django.conf import settings

from routing import tracing
from routing.context import GatewayError, Headers, RequestContext
from routing.snapshot import RouteSpec

__all__ = [
    "HOP_BY_HOP",
    "check_framing",
    "drop_hop_by_hop",
    "transform",
    "upstream_path_for",
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
# The gateway alone says who the caller is; a client-written identity header never goes upstream.
IDENTITY_HEADERS = frozenset({b"x-user-id", b"x-user-role", b"x-user-roles", b"x-user-email"})
_CREDENTIALS = frozenset({b"authorization", b"x-api-key"})
# Headers the gateway sets itself on the upstream request. Expect is answered by the gateway's
# own server (100-continue), so the upstream must not wait for a second handshake. The trace
# context is the gateway's own (routing.tracing), the caller's tracestate re-added when valid.
_REPLACED = frozenset(
    {
        b"host",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
        b"expect",
        b"traceparent",
        b"tracestate",
    }
)


async def check_framing(ctx: RequestContext) -> None:
    lengths = {value.strip() for name, value in ctx.headers if name == b"content-length"}
    has_te = any(name == b"transfer-encoding" for name, _ in ctx.headers)
    if (lengths and has_te) or len(lengths) > 1:
        raise GatewayError(400, "bad_request", "The request's length is ambiguous.")
    if lengths and not next(iter(lengths)).isdigit():
        raise GatewayError(400, "bad_request", "Content-Length is not a number.")


def drop_hop_by_hop(headers: Headers, drop: frozenset[bytes] = frozenset()) -> Headers:
    """Headers minus hop-by-hop ones, minus any header the Connection header names."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    }
    removed = HOP_BY_HOP | drop | named
    return [(name, value) for name, value in headers if name not in removed]


async def transform(ctx: RequestContext) -> None:
    route = ctx.route
    assert route is not None
    ctx.upstream_path = upstream_path_for(route, ctx.path, ctx.route_match)
    drop = _REPLACED | IDENTITY_HEADERS
    if not route.forward_authorization:
        drop |= _CREDENTIALS
    allow_underscores = settings.PORTIER_ALLOW_UNDERSCORE_HEADERS
    headers = [
        (name, value)
        for name, value in drop_hop_by_hop(ctx.headers, drop)
        # Underscored names are dropped, as NGINX does: X_User_Id would otherwise reach a
        # framework that folds it into X-User-Id.
        if allow_underscores or b"_" not in name
    ]
    forwarded_for = [value for name, value in headers if name == b"x-forwarded-for"]
    headers = [(name, value) for name, value in headers if name != b"x-forwarded-for"]
    chain = b", ".join([*forwarded_for, ctx.peer_ip.encode()]) if ctx.peer_ip else None
    if chain:
        headers.append((b"x-forwarded-for", chain))
    headers.append((b"x-forwarded-proto", ctx.scheme.encode()))
    if ctx.host:
        headers.append((b"x-forwarded-host", (ctx.header(b"host") or b"").strip()))
    headers.append((b"x-request-id", ctx.request_id.encode()))
    headers.append((b"traceparent", tracing.traceparent(ctx)))
    state = tracing.tracestate(ctx)
    if state is not None:
        headers.append((b"tracestate", state))
    identity = ctx.identity
    if identity is not None:
        headers.append((b"x-user-id", identity.subject.encode()))
        if identity.email:
            headers.append((b"x-user-email", identity.email.encode()))
        if identity.roles:
            headers.append((b"x-user-role", identity.primary_role.encode()))
            headers.append((b"x-user-roles", ",".join(sorted(identity.roles)).encode()))
    if route.preserve_host and ctx.header(b"host"):
        headers.append((b"host", ctx.header(b"host") or b""))
    ctx.upstream_headers = headers


def upstream_path_for(route: RouteSpec, path: str, found: object) -> str:
    """The path after strip-prefix or rewrite (before the target's own base path)."""
    if route.regex is not None:
        if route.rewrite and isinstance(found, re.Match):
            return found.expand(route.rewrite)
        return path
    if not (route.strip_prefix or route.rewrite):
        return path
    rest = path[len(route.path) :]
    base = route.rewrite or "/"
    if not rest:
        return base
    return base.rstrip("/") + "/" + rest.lstrip("/")
