"""CORS answers from compiled rules (routing.config.edge.CorsSpec): one implementation for the
proxied routes (routing.proxy.stages.edge_checks, .edge_answer) and the gateway's own endpoints
(gateway_site.cors).

An origin is echoed back only when the rules allow it; `*` is sent only by rules without
credentials; `Vary: Origin` goes on every answer the rules cover, allowed or not, so no cache
serves one origin's answer to another. Whatever Access-Control-* headers an upstream sent are
replaced by the gateway's: two Allow-Origin values make a browser refuse the answer.
"""

from __future__ import annotations

from routing.config.edge import CorsSpec
from routing.proxy.context import Headers

__all__ = ["actual_headers", "is_preflight", "preflight_headers", "without_cors"]

_VARY_PREFLIGHT = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


def is_preflight(method: str, origin: bytes | None, requested_method: bytes | None) -> bool:
    return method == "OPTIONS" and origin is not None and requested_method is not None


def preflight_headers(
    cors: CorsSpec, origin: bytes, requested_headers: bytes | None
) -> Headers | None:
    """The preflight's answer headers, or None when the origin is not allowed."""
    allowed = _allow_origin(cors, origin)
    if allowed is None:
        return None
    headers = [
        (b"access-control-allow-origin", allowed),
        (b"access-control-allow-methods", cors.methods),
        (b"vary", _VARY_PREFLIGHT),
    ]
    asked = cors.headers or (requested_headers or b"").strip()
    if asked:
        headers.append((b"access-control-allow-headers", asked))
    if cors.credentials:
        headers.append((b"access-control-allow-credentials", b"true"))
    if cors.max_age:
        headers.append((b"access-control-max-age", cors.max_age))
    return headers


def actual_headers(cors: CorsSpec, origin: bytes | None) -> Headers:
    """What an answer to a (non-preflight) request carries: Vary always, the rest when the
    request's origin is allowed."""
    headers: Headers = [(b"vary", b"Origin")]
    if origin is None:
        return headers
    allowed = _allow_origin(cors, origin)
    if allowed is None:
        return headers
    headers.append((b"access-control-allow-origin", allowed))
    if cors.credentials:
        headers.append((b"access-control-allow-credentials", b"true"))
    if cors.expose_headers:
        headers.append((b"access-control-expose-headers", cors.expose_headers))
    return headers


def without_cors(headers: Headers) -> Headers:
    """Headers minus any Access-Control-* the upstream sent."""
    return [h for h in headers if not h[0].startswith(b"access-control-")]


def _allow_origin(cors: CorsSpec, origin: bytes) -> bytes | None:
    try:
        text = origin.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if cors.any_origin and not cors.credentials:
        return b"*"
    # Origins are compared in the lower case they are configured in; a browser sends the
    # scheme and host lower-cased already.
    return text.encode() if cors.allows(text) else None
