"""The client's address: the socket peer, or X-Forwarded-For only through trusted proxies.

Without trusted proxies (PORTIER_TRUSTED_PROXIES empty) the header is ignored, so a client
cannot pick its own address to escape an IP rate limit. With them, the chain is read from the
right, skipping trusted hops; the first untrusted address is the client. The transform stage
asks the same question (`is_trusted_proxy`) to decide whether the X-Forwarded-* headers it
received are extended or replaced.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from routing.hot_settings import hot_settings

__all__ = ["address_in", "client_scheme", "is_trusted_proxy", "resolve_client_ip"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in spec)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def resolve_client_ip(peer: str, forwarded_for: list[bytes]) -> str:
    if not is_trusted_proxy(peer):
        return peer
    networks = _networks(tuple(hot_settings.PORTIER_TRUSTED_PROXIES))
    client = peer
    hops = [hop.strip() for value in forwarded_for for hop in value.decode("latin-1").split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # a malformed hop ends what can be believed
        client = hop
        if not _trusted(hop, networks):
            break
    return client


def is_trusted_proxy(peer: str) -> bool:
    """Is the socket peer one of PORTIER_TRUSTED_PROXIES (whose X-Forwarded-* are believed)?"""
    proxies = hot_settings.PORTIER_TRUSTED_PROXIES
    return bool(proxies) and _peer_trusted(peer, tuple(proxies))


@lru_cache(maxsize=1024)
def _peer_trusted(peer: str, spec: tuple[str, ...]) -> bool:
    # Cached: the peers of one gateway are a few load balancers (~0.5 µs instead of ~4 µs).
    return _trusted(peer, _networks(spec))


def address_in(address: str, cidrs: list[str]) -> bool:
    """Is the address inside one of the networks (CIDR strings)?"""
    return _trusted(address, _networks(tuple(cidrs)))


def client_scheme(scheme: str, peer: str, forwarded_proto: bytes | None) -> str:
    """The scheme the client used: the server's, or a trusted proxy's X-Forwarded-Proto (its
    first value: the scheme the outermost proxy saw)."""
    if forwarded_proto is None or not is_trusted_proxy(peer):
        return scheme
    first = forwarded_proto.split(b",", 1)[0].strip().lower()
    return first.decode("ascii") if first in (b"http", b"https") else scheme
