"""Admission: what the matched route refuses or answers before anyone is identified.

In order: the route's IP deny and allow lists (403 ip_forbidden, judged on the client address
through trusted proxies), the HTTPS redirect (308 to the https:// URL for a request without a
body; 403 https_required for one with a body, which a client would not send again), and the
CORS preflight, answered here and never forwarded: browsers send it without credentials, so it
must not meet authentication, and the upstream has nothing to add. A preflight to a route
without CORS was matched as a plain OPTIONS request (stages/match.py) and goes on as one.

All of it was resolved over the gateway-wide defaults when the snapshot was compiled
(routing.config.edge); a route with none of it set costs three attribute reads.
"""

from __future__ import annotations

import re

from routing.proxy.client_ip import client_scheme
from routing.proxy.context import Answered, GatewayError, GatewayResponse, RequestContext
from routing.proxy.cors import is_preflight, preflight_headers

__all__ = ["admit"]

_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_HOST = re.compile(rf"^({_LABEL}(\.{_LABEL})*|\[[0-9a-f:.]+\])$")


async def admit(ctx: RequestContext) -> None:
    route = ctx.route
    assert route is not None
    edge = route.edge
    if edge.ip_rules is not None and not edge.ip_rules.permits(ctx.client_ip):
        raise GatewayError(403, "ip_forbidden", "This route does not accept calls from here.")
    if edge.https_redirect:
        _require_https(ctx)
    if edge.cors is not None:
        origin = ctx.header(b"origin")
        if is_preflight(ctx.method, origin, ctx.header(b"access-control-request-method")):
            assert origin is not None
            _answer_preflight(ctx, origin)


def _require_https(ctx: RequestContext) -> None:
    scheme = client_scheme(ctx.scheme, ctx.peer_ip, ctx.header(b"x-forwarded-proto"))
    if scheme == "https":
        return
    if ctx.has_body:
        raise GatewayError(403, "https_required", "This route is served over HTTPS only.")
    if not _HOST.match(ctx.host):
        raise GatewayError(400, "invalid_host", "The Host header is not a host name.")
    location = b"https://" + ctx.host.encode("ascii") + ctx.raw_path
    if ctx.query_string:
        location += b"?" + ctx.query_string
    raise Answered(
        GatewayResponse(
            308,
            [
                (b"location", location),
                (b"content-length", b"0"),
                (b"cache-control", b"no-store"),
                (b"x-request-id", ctx.request_id.encode()),
            ],
        )
    )


def _answer_preflight(ctx: RequestContext, origin: bytes) -> None:
    route = ctx.route
    assert route is not None and route.edge.cors is not None
    headers = preflight_headers(
        route.edge.cors, origin, ctx.header(b"access-control-request-headers")
    )
    if headers is None:
        # Vary: Origin is added on the way out (stages/answer.py), as to every answer.
        raise GatewayError(
            403, "origin_not_allowed", "This origin may not call this route from a browser."
        )
    ctx.preflight = True
    headers += [(b"content-length", b"0"), (b"x-request-id", ctx.request_id.encode())]
    raise Answered(GatewayResponse(204, headers))
