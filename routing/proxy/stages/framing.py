"""Framing: refuse a request whose length is ambiguous, before anything else reads it.

Content-Length with Transfer-Encoding, or disagreeing Content-Lengths, is how request smuggling
starts, so it is refused before anything is forwarded, whatever the HTTP parser let through.
"""

from __future__ import annotations

from routing.proxy.context import GatewayError, RequestContext

__all__ = ["check_framing"]


async def check_framing(ctx: RequestContext) -> None:
    lengths = {value.strip() for name, value in ctx.headers if name == b"content-length"}
    has_te = any(name == b"transfer-encoding" for name, _ in ctx.headers)
    if (lengths and has_te) or len(lengths) > 1:
        raise GatewayError(400, "bad_request", "The request's length is ambiguous.")
    if lengths and not next(iter(lengths)).isdigit():
        raise GatewayError(400, "bad_request", "Content-Length is not a number.")
