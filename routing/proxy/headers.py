"""Header rules shared by the stages that edit headers on the way in and on the way out."""

from __future__ import annotations

from routing.proxy.context import Headers

__all__ = ["HOP_BY_HOP", "IDENTITY_HEADERS", "drop_hop_by_hop"]

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
