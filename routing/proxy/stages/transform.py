"""Transform: the path and headers the upstream receives.

The path after strip-prefix or rewrite; the client's headers minus what only the gateway (or a
trusted proxy) may say (routing.proxy.headers: hop-by-hop, identity families, `Proxy`, path
overrides, and from an untrusted client every X-Forwarded-* and the like); then what the
gateway vouches for: X-Forwarded-*, the request id, the trace context and the caller's X-User-*
headers, written after the client's were dropped.

X-Forwarded-For from a client that is not a trusted proxy is replaced by the socket peer, not
appended to: an upstream that reads the leftmost address would otherwise take the client's word
for it. From a trusted proxy the chain is extended, and its X-Forwarded-Proto and -Host kept.

A route's transform rules (routing.config.transforms) then rewrite the client's headers (before
the gateway's own are written, which no rule may name), the query string, and the top-level
fields of a JSON body: a body rule reads the body whole, up to PORTIER_TRANSFORM_BODY_BYTES
(413 past it), and sends the rewritten body with its new Content-Length. Bodies of other types
pass untouched.
"""

from __future__ import annotations

import re
from functools import lru_cache

from routing.config.spec import RouteSpec
from routing.hot_settings import hot_settings
from routing.observe import tracing
from routing.proxy.bounded import read_bounded
from routing.proxy.client_ip import is_trusted_proxy
from routing.proxy.context import GatewayError, Headers, RequestContext
from routing.proxy.headers import (
    ALWAYS_DROPPED,
    HOP_BY_HOP,
    IDENTITY_NAMES,
    PROXY_NAMES,
    PROXY_PREFIXES,
    connection_named,
    identity_prefixes,
)
from routing.proxy.rewrite import (
    is_json,
    placeholder_values,
    rewrite_body,
    rewrite_headers,
    rewrite_query,
)

__all__ = ["transform", "upstream_path_for"]

_CREDENTIALS = frozenset({b"authorization", b"x-api-key"})
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
# Headers the gateway sets itself on the upstream request. Expect is answered by the gateway's
# own server (100-continue), so the upstream must not wait for a second handshake. The trace
# context is the gateway's own (routing.observe.tracing), the caller's tracestate re-added when
# valid.
_REPLACED = frozenset({b"host", b"x-request-id", b"expect", b"traceparent", b"tracestate"})
_ALWAYS = HOP_BY_HOP | ALWAYS_DROPPED | _REPLACED
# Every name the gateway controls: an underscored spelling of one is dropped even when
# PORTIER_ALLOW_UNDERSCORE_HEADERS lets other underscored names through.
_GUARDED = _ALWAYS | _CREDENTIALS | _FORWARDED | PROXY_NAMES | IDENTITY_NAMES
# The names dropped outright, by (route forwards credentials, peer is a trusted proxy).
_DROP = {
    (forwards, trusted): _ALWAYS
    | (frozenset() if forwards else _CREDENTIALS)
    | (frozenset() if trusted else PROXY_NAMES | _FORWARDED)
    for forwards in (False, True)
    for trusted in (False, True)
}


@lru_cache(maxsize=8)
def _guarded_prefixes(identity: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return identity + PROXY_PREFIXES


async def transform(ctx: RequestContext) -> None:
    route = ctx.route
    assert route is not None
    ctx.upstream_path = upstream_path_for(route, ctx.path, ctx.route_match)
    trusted = is_trusted_proxy(ctx.peer_ip)
    headers, forwarded_for = _client_headers(ctx.headers, route.forward_authorization, trusted)
    rules = route.transform
    if rules is not None:
        value_of = placeholder_values(ctx)
        if rules.request_headers is not None:
            headers = rewrite_headers(headers, rules.request_headers, value_of)
        if rules.query is not None:
            ctx.upstream_query = rewrite_query(ctx.query_string, rules.query, value_of)
        if rules.body is not None and ctx.has_body and is_json(ctx.header(b"content-type")):
            ctx.body = rewrite_body(await _read_body(ctx), rules.body, value_of)
            headers = [h for h in headers if h[0] != b"content-length"]
            headers.append((b"content-length", str(len(ctx.body)).encode()))
    chain = b", ".join([*forwarded_for, ctx.peer_ip.encode()]) if ctx.peer_ip else None
    if chain:
        headers.append((b"x-forwarded-for", chain))
    present = {name for name, _ in headers if name in _FORWARDED} if trusted else ()
    if b"x-forwarded-proto" not in present:
        headers.append((b"x-forwarded-proto", ctx.scheme.encode()))
    if ctx.host and b"x-forwarded-host" not in present:
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


async def _read_body(ctx: RequestContext) -> bytes:
    """The whole body for a body rule, refused (413) past the smaller of the route's limit and
    PORTIER_TRANSFORM_BODY_BYTES."""
    route = ctx.route
    assert route is not None and ctx.receive_body is not None
    limit = min(
        route.max_body_bytes or hot_settings.PORTIER_MAX_BODY_BYTES,
        hot_settings.PORTIER_TRANSFORM_BODY_BYTES,
    )
    too_large = GatewayError(
        413,
        "payload_too_large",
        f"The request body is larger than {limit} bytes.",
        [(b"connection", b"close")],
    )
    declared = ctx.header(b"content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large
    return await read_bounded(ctx.receive_body(), limit, too_large)


def _client_headers(
    received: Headers, forwards_credentials: bool, trusted: bool
) -> tuple[Headers, list[bytes]]:
    """The client's headers that may go upstream, and (from a trusted proxy) its X-Forwarded-For
    values, to be extended."""
    drop = _DROP[forwards_credentials, trusted]
    identity = identity_prefixes(hot_settings.PORTIER_IDENTITY_HEADER_PREFIXES)
    allow_underscores = hot_settings.PORTIER_ALLOW_UNDERSCORE_HEADERS
    named = connection_named(received)
    kept: Headers = []
    forwarded_for: list[bytes] = []
    for name, value in received:
        if name in drop or name in named:
            continue
        if b"_" in name:
            # Dropped as NGINX does: X_User_Id would otherwise reach a framework that folds it
            # into X-User-Id. Allowed, they still may not spell a name the gateway controls.
            if not allow_underscores:
                continue
            folded = name.replace(b"_", b"-")
            if folded in _GUARDED or folded.startswith(_guarded_prefixes(identity)):
                continue
        if name in IDENTITY_NAMES or name.startswith(identity):
            continue
        if name.startswith(PROXY_PREFIXES):
            if not trusted:
                continue
            if name == b"x-forwarded-for":
                forwarded_for.append(value)
                continue
        kept.append((name, value))
    return kept, forwarded_for


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
