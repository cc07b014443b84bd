"""Transform: the path and headers the upstream receives.

The path after strip-prefix or rewrite; the client's headers minus hop-by-hop ones and any
identity header it wrote itself; then what the gateway vouches for: X-Forwarded-*, the request
id, the trace context and the caller's X-User-* headers.
"""

from __future__ import annotations

import re

from django.conf import settings

from routing.config.spec import RouteSpec
from routing.observe import tracing
from routing.proxy.context import RequestContext
from routing.proxy.headers import IDENTITY_HEADERS, drop_hop_by_hop

__all__ = ["transform", "upstream_path_for"]

_CREDENTIALS = frozenset({b"authorization", b"x-api-key"})
# Headers the gateway sets itself on the upstream request. Expect is answered by the gateway's
# own server (100-continue), so the upstream must not wait for a second handshake. The trace
# context is the gateway's own (routing.observe.tracing), the caller's tracestate re-added when
# valid.
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
