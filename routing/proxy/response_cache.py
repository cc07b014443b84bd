"""The response cache's rules, without I/O: what a request's key is, which answers may be stored
and for how long, how an entry is laid out in the store, and when a client's conditional request
is answered 304.

Correctness first (RFC 9111 for a shared cache): an answer is stored only when its status is
cacheable by default, it sets no cookie, its Cache-Control allows a shared cache (no `no-store`,
`private` or `no-cache`; `s-maxage`, else `max-age`, else `Expires` shortens the route's ttl)
and its Vary is not `*`. The headers the gateway adds per request (request id, rate-limit
headers, CORS, security headers) are never stored: they are written for each answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import unquote_plus

from routing.config.cache import CacheSpec
from routing.proxy.context import Headers, RequestContext

__all__ = [
    "CACHEABLE_STATUSES",
    "Entry",
    "base_key",
    "decode",
    "encode_entry",
    "encode_vary",
    "fresh_seconds",
    "not_modified",
    "stored_headers",
    "strong_etag",
    "variant_key",
]

CACHEABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 410})
_NOT_STORED = frozenset({b"x-request-id", b"set-cookie", b"age", b"x-cache"})
_NOT_MODIFIED_KEEPS = frozenset(
    {b"etag", b"cache-control", b"expires", b"vary", b"last-modified", b"content-location"}
)


@dataclass(frozen=True, slots=True)
class Entry:
    status: int
    headers: Headers
    body: bytes
    etag: bytes
    stored_at: float
    fresh_until: float
    stale_until: float

    def age(self, now: float) -> bytes:
        return str(max(0, int(now - self.stored_at))).encode()


def _digest(parts: list[bytes]) -> str:
    return hashlib.blake2b(b"\x00".join(parts), digest_size=16).hexdigest()


def base_key(spec: CacheSpec, ctx: RequestContext, user: str | None) -> str:
    """The key of a request before the upstream's own Vary: host, path, the chosen query
    parameters sorted, the route's vary headers and (per_user) the caller. HEAD shares GET's."""
    parts = [ctx.host.encode(), ctx.path.encode(), _query(spec, ctx.query_string)]
    for name in spec.vary_headers:
        parts.append(name + b"=" + (ctx.header(name) or b""))
    parts.append(b"user=" + user.encode() if user is not None else b"anon")
    return f"rc:{spec.namespace}:{_digest(parts)}"


def _query(spec: CacheSpec, query: bytes) -> bytes:
    pairs = []
    for piece in query.split(b"&"):
        if not piece:
            continue
        name, _, value = piece.partition(b"=")
        decoded = unquote_plus(name.decode("latin-1"))
        if spec.vary_query is None or decoded in spec.vary_query:
            pairs.append((decoded, unquote_plus(value.decode("latin-1"))))
    # By name only: a repeated parameter's values keep their order (?sort=a&sort=b is a list).
    return json.dumps(sorted(pairs, key=lambda pair: pair[0])).encode()


def variant_key(base: str, names: list[str], ctx: RequestContext) -> str:
    """The key under the upstream's Vary: the request's values of the headers it names."""
    values = [(ctx.header(name.encode("latin-1")) or b"").strip() for name in names]
    return f"{base}:{_digest(values)}"


def fresh_seconds(spec: CacheSpec, status: int, headers: Headers) -> tuple[int, list[str]] | None:
    """How long this answer may be served, and the header names its Vary lists; None when it
    must not be stored (the content length is checked by the caller)."""
    if status not in CACHEABLE_STATUSES:
        return None
    directives: dict[str, str] = {}
    vary: list[str] = []
    expires: bytes | None = None
    age = 0
    encoded = False
    for name, value in headers:
        if name == b"set-cookie" or name == b"content-range":
            return None
        if name == b"cache-control":
            for item in value.decode("latin-1").lower().split(","):
                key, _, arg = item.strip().partition("=")
                directives[key] = arg.strip().strip('"')
        elif name == b"vary":
            vary += [v.strip().lower() for v in value.decode("latin-1").split(",") if v.strip()]
        elif name == b"expires":
            expires = value
        elif name == b"age":
            age = _seconds(value.decode("latin-1").strip())
        elif name == b"content-encoding":
            encoded = value.strip().lower() not in (b"", b"identity")
    if {"no-store", "private", "no-cache"} & directives.keys() or "*" in vary:
        return None
    if encoded and "accept-encoding" not in vary:
        vary.append("accept-encoding")  # an encoded body is only for clients that accept it
    ttl = spec.ttl
    limit = _seconds(directives.get("s-maxage")) if "s-maxage" in directives else None
    if limit is None and "max-age" in directives:
        limit = _seconds(directives["max-age"])
    if limit is not None:
        limit -= age  # the time an upstream cache already held it (RFC 9111 4.2.3)
    if limit is None and expires is not None:
        limit = _until(expires)
    if limit is not None:
        ttl = min(ttl, limit)
    return (ttl, sorted(set(vary))) if ttl > 0 else None


def _seconds(text: str | None) -> int:
    return int(text) if text is not None and text.isdigit() else 0


def _until(expires: bytes) -> int:
    try:
        when = parsedate_to_datetime(expires.decode("latin-1"))
    except (TypeError, ValueError):
        return 0  # an invalid Expires means already expired (RFC 9111 5.3)
    return int(when.timestamp() - time.time())


def stored_headers(headers: Headers, per_request: Headers) -> Headers:
    """The upstream's headers as stored: without what the gateway writes per request."""
    dropped = _NOT_STORED | {name for name, _ in per_request}
    return [(name, value) for name, value in headers if name not in dropped]


def strong_etag(body: bytes) -> bytes:
    return b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"'


def not_modified(entry: Entry, ctx: RequestContext) -> Headers | None:
    """The 304's headers when the client's copy is current, else None."""
    match = ctx.header(b"if-none-match")
    if match is not None:
        tags = {tag.strip().removeprefix(b"W/") for tag in match.split(b",")}
        if b"*" not in tags and entry.etag.removeprefix(b"W/") not in tags:
            return None
    else:
        since = ctx.header(b"if-modified-since")
        if since is None or not _not_modified_since(entry, since):
            return None
    kept = [(name, value) for name, value in entry.headers if name in _NOT_MODIFIED_KEEPS]
    if not any(name == b"etag" for name, _ in kept):
        kept.append((b"etag", entry.etag))
    return kept


def _not_modified_since(entry: Entry, since: bytes) -> bool:
    try:
        client = parsedate_to_datetime(since.decode("latin-1")).timestamp()
    except (TypeError, ValueError):
        return False
    modified = entry.stored_at
    for name, value in entry.headers:
        if name == b"last-modified":
            with contextlib.suppress(TypeError, ValueError):
                modified = parsedate_to_datetime(value.decode("latin-1")).timestamp()
    return modified <= client


# -- The store's layout: b"E" + header length + JSON header + body, or b"V" + the Vary names --


def encode_entry(entry: Entry) -> bytes:
    head = json.dumps(
        {
            "s": entry.status,
            "h": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in entry.headers],
            "e": entry.etag.decode("latin-1"),
            "t": entry.stored_at,
            "f": entry.fresh_until,
            "x": entry.stale_until,
        }
    ).encode()
    return b"E" + len(head).to_bytes(4, "big") + head + entry.body


def encode_vary(names: list[str]) -> bytes:
    return b"V" + json.dumps(names).encode()


def decode(blob: bytes | None) -> Entry | list[str] | None:
    """An entry, the Vary names stored at a base key, or None (absent or unreadable)."""
    if not blob:
        return None
    try:
        if blob[:1] == b"V":
            return [str(name) for name in json.loads(blob[1:])]
        if blob[:1] != b"E":
            return None
        size = int.from_bytes(blob[1:5], "big")
        head = json.loads(blob[5 : 5 + size])
        return Entry(
            status=int(head["s"]),
            headers=[(n.encode("latin-1"), v.encode("latin-1")) for n, v in head["h"]],
            body=blob[5 + size :],
            etag=head["e"].encode("latin-1"),
            stored_at=float(head["t"]),
            fresh_until=float(head["f"]),
            stale_until=float(head["x"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
