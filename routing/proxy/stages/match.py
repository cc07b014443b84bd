"""Match: pick the route for a request from the snapshot's ordered route table.

Routes are pre-sorted (priority, then path length); the first route whose host, path, headers and
method all match wins. A path that matches only with another method gives 405 with Allow.

A CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) is matched by the method
it asks about, so it finds the route the real request will take; when that route has no CORS
of its own to answer with, the preflight is matched as a plain OPTIONS (its upstream answers).

TRACE and CONNECT are allowed only by a route whose method list names them: a route without a
list (any method) does not. TRACE echoes the request, credentials and cookies included, back to
whoever can read the answer (cross-site tracing); CONNECT asks the gateway for a tunnel to
anywhere. Neither is proxied by accident. A CONNECT's authority-form target (`host:port`), which
no route's path can match, gets the same 405 rather than 400 invalid_path when a server hands it
over; the served one (httptools) refuses it first, 400 bad_request.
"""

from __future__ import annotations

import re

from routing.config.spec import RouteSpec
from routing.hot_settings import hot_settings
from routing.proxy.context import GatewayError, RequestContext
from routing.proxy.paths import PathRejected, is_reserved_path, normalize_path

__all__ = ["headers_match", "host_matches", "match", "route_path_matches"]

_EXPLICIT_ONLY = frozenset({"TRACE", "CONNECT"})
# What a route without a method list allows: everything but the methods above.
_ANY_METHOD = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def match(ctx: RequestContext) -> None:
    if ctx.method == "CONNECT" and not ctx.raw_path.startswith(b"/"):
        raise _not_allowed(ctx.method, _ANY_METHOD)
    try:
        ctx.path = normalize_path(
            ctx.raw_path, allow_encoded_slashes=hot_settings.PORTIER_ALLOW_ENCODED_SLASHES
        )
    except PathRejected as exc:
        raise GatewayError(400, "invalid_path", str(exc)) from None
    if is_reserved_path(ctx.path):  # e.g. /x/../admin/: the gateway's own paths are never proxied
        raise GatewayError(404, "route_not_found", "No route matches this request.")
    ctx.host = _host_of(ctx)
    method = _method_of(ctx)
    if method != ctx.method:
        # A preflight: the route the real request will take answers it when that route has
        # CORS; a route without leaves it to its upstream, matched as the OPTIONS it is.
        found = _first(ctx, method)
        if isinstance(found, tuple) and found[0].edge.cors is not None:
            ctx.route, ctx.route_match = found
            return
    found = _first(ctx, ctx.method)
    if isinstance(found, tuple):
        ctx.route, ctx.route_match = found
        return
    if found:
        raise _not_allowed(ctx.method, found)
    raise GatewayError(404, "route_not_found", "No route matches this request.")


def _first(ctx: RequestContext, method: str) -> tuple[RouteSpec, object] | set[str]:
    """The first route taking `method` here with its path match, or the methods the routes
    matching all else allow (empty: none matches)."""
    allowed: set[str] = set()
    for route in ctx.snapshot.routes:
        if route.hosts and not host_matches(ctx.host, route.hosts):
            continue
        found = route_path_matches(route, ctx.path)
        if found is None:
            continue
        if route.header_matches and not headers_match(ctx, route):
            continue
        if route.methods:
            if method not in route.methods:
                allowed |= route.methods
                continue
        elif method in _EXPLICIT_ONLY:
            allowed |= _ANY_METHOD
            continue
        return route, found
    return allowed


def _method_of(ctx: RequestContext) -> str:
    """The method a route must allow: a CORS preflight's is the one it asks about, so the route
    that will serve the real request is the one that answers it (stages/admission.py)."""
    if ctx.method != "OPTIONS" or ctx.header(b"origin") is None:
        return ctx.method
    asked = ctx.header(b"access-control-request-method")
    if asked is None:
        return ctx.method
    return asked.decode("latin-1").strip().upper() or ctx.method


def _not_allowed(method: str, allowed: set[str] | frozenset[str]) -> GatewayError:
    allow = ", ".join(sorted(allowed))
    return GatewayError(
        405, "method_not_allowed", f"{method} is not allowed here.", [(b"allow", allow.encode())]
    )


def route_path_matches(route: RouteSpec, path: str) -> re.Match[str] | bool | None:
    """A regex match object, True for a plain match, None when the path does not match."""
    if route.regex is not None:
        return route.regex.fullmatch(path)
    if route.match_type == "exact":
        return True if path == route.path else None
    prefix = route.path
    # Whole segments only: /api matches /api and /api/x, never /apix.
    if path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/"):
        return True
    return None


def _host_of(ctx: RequestContext) -> str:
    raw = ctx.header(b"host") or b""
    host = raw.decode("latin-1").strip().lower()
    if host.startswith("["):  # IPv6 literal
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def headers_match(ctx: RequestContext, route: RouteSpec) -> bool:
    for name, expected in route.header_matches:
        value = ctx.header(name.encode("latin-1"))
        if value is None or value.decode("latin-1") != expected:
            return False
    return True
