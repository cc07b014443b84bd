"""Framing: refuse a request whose length or target is ambiguous, before anything else reads it.

Content-Length with Transfer-Encoding, or disagreeing Content-Lengths, is how request smuggling
starts, so it is refused before anything is forwarded, whatever the HTTP parser let through. So
are several Host headers (RFC 9112 3.2: which one would the upstream believe?), several
Authorization or X-API-Key headers (the gateway checks one; the upstream might read another), and a
Transfer-Encoding other than one `chunked` (dropping the other codings would forward a body the
client did not send). The served stack's protocol (gateway_site.protocol) refuses the framing
ones before the application starts; this stage holds the same line for Django's own handler, and
is where every entry refuses repeated credentials.
"""

from __future__ import annotations

from routing.proxy.context import GatewayError, RequestContext

__all__ = ["check_framing"]


async def check_framing(ctx: RequestContext) -> None:
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    hosts = authorizations = api_keys = 0
    for name, value in ctx.headers:
        if name == b"content-length":
            lengths.add(value.strip())
        elif name == b"transfer-encoding":
            codings.append(value)
        elif name == b"host":
            hosts += 1
        elif name == b"authorization":
            authorizations += 1
        elif name == b"x-api-key":
            api_keys += 1
    if hosts > 1:
        raise GatewayError(400, "bad_request", "The request must have exactly one Host header.")
    # The gateway checks one credential; an upstream reading another copy (the last one, or all
    # of them joined) would believe a credential nobody checked.
    if authorizations > 1 or api_keys > 1:
        raise GatewayError(400, "bad_request", "Send each credential header once.")
    if (lengths and codings) or len(lengths) > 1:
        raise GatewayError(400, "bad_request", "The request's length is ambiguous.")
    if lengths and not next(iter(lengths)).isdigit():
        raise GatewayError(400, "bad_request", "Content-Length is not a number.")
    if codings and (len(codings) > 1 or codings[0].strip().lower() != b"chunked"):
        raise GatewayError(
            501,
            "unsupported_transfer_encoding",
            "Only Transfer-Encoding: chunked (alone, once) is supported.",
        )
