"""A route's response cache settings: their shape, checked by Route.clean (so by the admin, the
management API and the declarative document alike), and their compiled form, which the proxy's
cache (routing.proxy.response_cache) reads.

    cache: {ttl: 60, vary_headers: [Accept-Language], vary_query: [page, size],
            per_user: false, max_entry_bytes: 1048576, stale_if_error: 300}

`ttl` is required (seconds an answer stays fresh, at most what the upstream's Cache-Control
allows); `vary_query` left out keys on every query parameter, a list on those only; `per_user`
caches answers to callers with credentials, one entry per caller; `stale_if_error` serves the
last good answer that many seconds past its freshness when the upstream fails.

A route's entries live under a namespace digested from its own row and from its service's (the
targets included): a change to either that can change the answer starts the route's cache
afresh on every instance, with the configuration itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["CacheSpec", "cache_errors", "compile_cache"]

MAX_TTL = 7 * 24 * 3600
MAX_ENTRY_BYTES = 16 * 1024 * 1024
DEFAULT_ENTRY_BYTES = 1024 * 1024
_KEYS = ("ttl", "vary_headers", "vary_query", "per_user", "max_entry_bytes", "stale_if_error")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
# A service's fields that decide how, and whether, its targets are reached, never what they
# answer: tuning them (often during an incident, when stale_if_error matters most) keeps its
# routes' entries. Every other field, the targets included, is digested, so a field added
# later starts the cache afresh when it changes until it is listed here.
_SERVICE_REACH_ONLY = frozenset(
    {
        "description",
        "connect_timeout",
        "read_timeout",
        "write_timeout",
        "total_timeout",
        "max_in_flight",
        "retries",
        "retry_statuses",
        "health_path",
        "health_interval",
        "health_timeout",
        "healthy_threshold",
        "unhealthy_threshold",
        "breaker_failures",
        "breaker_statuses",
        "breaker_cooldown",
    }
)


@dataclass(frozen=True, slots=True)
class CacheSpec:
    ttl: int
    vary_headers: tuple[bytes, ...]  # lower case
    vary_query: tuple[str, ...] | None  # None: every parameter
    per_user: bool
    max_entry_bytes: int
    stale_if_error: int
    # The route's entries' namespace: its id and a digest of its configuration (its purge
    # count included) and of what its service answers with, so a changed or purged route, or
    # a service moved to other targets, never meets an entry stored before.
    namespace: str


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def cache_errors(data: Any) -> list[str]:
    """What is wrong with a cache block, one line per problem (empty when it is sound)."""
    if data is None:
        return []
    if not isinstance(data, dict):
        return ['Write the cache as an object, e.g. {"ttl": 60}.']
    errors = [f"{key}: unknown key; use {', '.join(_KEYS)}." for key in data if key not in _KEYS]
    if "ttl" not in data:
        errors.append("ttl: required: the seconds an answer stays fresh.")
    elif not _whole(data["ttl"], 1, MAX_TTL):
        errors.append(f"ttl: expected whole seconds from 1 to {MAX_TTL}.")
    for key in ("vary_headers", "vary_query"):
        value = data.get(key)
        if value is None and key == "vary_query":
            continue
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            errors.append(f"{key}: expected a list of names.")
        elif key == "vary_headers":
            errors += [
                f"{key}: {v!r} is not a header name." for v in value if not _HEADER_NAME.match(v)
            ]
    if not isinstance(data.get("per_user", False), bool):
        errors.append("per_user: expected true or false.")
    if not _whole(data.get("max_entry_bytes", DEFAULT_ENTRY_BYTES), 1, MAX_ENTRY_BYTES):
        errors.append(f"max_entry_bytes: expected bytes from 1 to {MAX_ENTRY_BYTES}.")
    if not _whole(data.get("stale_if_error", 0), 0, MAX_TTL):
        errors.append(f"stale_if_error: expected whole seconds from 0 to {MAX_TTL}.")
    return errors


def compile_cache(data: Any, route: dict[str, Any], service: dict[str, Any]) -> CacheSpec | None:
    """The compiled settings, or None for a route that does not cache. `route` and `service`
    are their rows as published (the service's with its targets): their digest names the
    entries, so any change to the route, or to what its service answers with, starts afresh."""
    if data is None:
        return None
    errors = cache_errors(data)
    if errors:
        raise ValueError("; ".join(errors))
    answering = {k: v for k, v in service.items() if k not in _SERVICE_REACH_ONLY}
    digest = hashlib.blake2b(
        json.dumps([route, answering], sort_keys=True, default=str).encode(), digest_size=8
    ).hexdigest()
    vary_query = data.get("vary_query")
    return CacheSpec(
        ttl=data["ttl"],
        vary_headers=tuple(
            sorted({h.lower().encode("latin-1") for h in data.get("vary_headers") or ()})
        ),
        vary_query=None if vary_query is None else tuple(sorted(set(vary_query))),
        per_user=bool(data.get("per_user", False)),
        max_entry_bytes=int(data.get("max_entry_bytes", DEFAULT_ENTRY_BYTES)),
        stale_if_error=int(data.get("stale_if_error", 0)),
        namespace=f"{route['id']}:{digest}",
    )
