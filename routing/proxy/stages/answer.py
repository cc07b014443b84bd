"""The answer's way out: what the gateway adds to, or takes from, every answer it sends.

On an upstream's answer, in order: the route's response transform, the upstream's Server and
X-Powered-By dropped, the security headers (an upstream's own value kept unless the route says
`override`; Strict-Transport-Security only to a client on HTTPS), the CORS headers (the
upstream's own Access-Control-* replaced), and compression (with `Vary: Accept-Encoding` on
every answer it would compress, for this client or not). The gateway's own answers (errors,
the HTTPS redirect, a preflight) get the security and CORS headers too: a browser can read an
error only when it carries them. An answer no route owns (404 route_not_found) gets the
gateway-wide defaults.

Each step is compiled ahead (routing.config.edge, routing.config.transforms): with the built-in
security headers and nothing else configured, this costs one pass over the answer's headers.
"""

from __future__ import annotations

from routing.config.edge import SecuritySpec
from routing.proxy.client_ip import client_scheme
from routing.proxy.compression import (
    chosen_encoding,
    compressed,
    compressed_headers,
    compressible,
    varied,
)
from routing.proxy.context import GatewayResponse, Headers, RequestContext
from routing.proxy.cors import actual_headers, without_cors
from routing.proxy.rewrite import placeholder_values, rewrite_headers

__all__ = ["dress"]

_HSTS = b"strict-transport-security"


def dress(ctx: RequestContext, response: GatewayResponse) -> GatewayResponse:
    route = ctx.route
    edge = route.edge if route is not None else ctx.snapshot.edge
    upstream = response.stream is not None and response.error_code is None
    headers = response.headers
    if upstream and route is not None and route.transform is not None:
        rules = route.transform.response_headers
        if rules is not None:
            headers = rewrite_headers(headers, rules, placeholder_values(ctx))
    if edge.security is not None:
        headers = _secured(ctx, headers, edge.security, upstream)
    if edge.cors is not None and not ctx.preflight:
        headers = without_cors(headers) if upstream else headers
        headers += actual_headers(edge.cors, ctx.header(b"origin"))
    if (
        upstream
        and edge.compression_min_bytes
        and compressible(response.status, ctx.method, headers, edge.compression_min_bytes)
    ):
        encoding = chosen_encoding(ctx.header(b"accept-encoding"))
        if encoding is None:  # sent as it came, but another client's copy would be compressed
            headers = varied(headers)
        else:
            assert response.stream is not None
            response.stream = compressed(response.stream, encoding)
            headers = compressed_headers(headers, encoding)
    response.headers = headers
    return response


def _secured(
    ctx: RequestContext, headers: Headers, security: SecuritySpec, upstream: bool
) -> Headers:
    added = list(security.headers)
    if security.hsts and _https(ctx):
        added.append((_HSTS, security.hsts))
    if not upstream:
        return headers + added
    ours = {name for name, _ in added}
    if security.override:
        kept = [h for h in headers if h[0] not in ours and h[0] not in security.hide]
        return kept + added
    present = set()
    kept = []
    for header in headers:
        name = header[0]
        if name in security.hide:
            continue
        present.add(name)
        kept.append(header)
    if not present.isdisjoint(ours):
        added = [h for h in added if h[0] not in present]
    return kept + added


def _https(ctx: RequestContext) -> bool:
    return client_scheme(ctx.scheme, ctx.peer_ip, ctx.header(b"x-forwarded-proto")) == "https"
