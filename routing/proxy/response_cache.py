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
from urllib.parse import unquote_to_bytes

from routing.config.cache import CacheSpec
from routing.proxy.client_ip import client_scheme
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
# Headers the gateway writes upstream that can change the answer (links, redirects).
_KEYED = (b"host", b"x-forwarded-host", b"x-forwarded-proto")
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
    """The key of a request before the upstream's own Vary: everything that can make the
    upstream answer differently and is not unique to each request. The client's Host (port
    included) and scheme; the upstream request's path and query (after the route's transform;
    only the `vary_query` parameters when listed) and its Host and X-Forwarded-Host/-Proto; the
    upstream values of the route's vary headers and of every header the route's transform
    writes (whose placeholders may name the caller or its address); and, with per_user, the
    caller. HEAD shares GET's."""
    scheme = client_scheme(ctx.scheme, ctx.peer_ip, ctx.header(b"x-forwarded-proto"))
    query = ctx.query_string if ctx.upstream_query is None else ctx.upstream_query
    parts = [
        scheme.encode(),
        (ctx.header(b"host") or b"").strip().lower(),
        ctx.upstream_path.encode(),
        _query(spec, query),
        *(name + b"=" + upstream_value(ctx, name) for name in _KEYED),
        *(name + b"=" + upstream_value(ctx, name) for name in spec.vary_headers),
    ]
    rules = ctx.route.transform.request_headers if ctx.route and ctx.route.transform else None
    if rules is not None:
        parts += [name + b"=" + upstream_value(ctx, name) for name, _ in (*rules.set, *rules.add)]
    parts.append(b"user=" + user.encode() if user is not None else b"anon")
    return f"rc:{spec.namespace}:{_digest(parts)}"


def upstream_value(ctx: RequestContext, name: bytes) -> bytes:
    """Every value of a header as the upstream receives it, in order."""
    return b", ".join(value.strip() for key, value in ctx.upstream_headers if key == name)


def _query(spec: CacheSpec, query: bytes) -> bytes:
    """The query's parameters by their raw bytes (decoding to text would fold different bytes
    into one U+FFFD), `?flag` apart from `?flag=`, sorted by name only: a repeated parameter's
    values keep their order (?sort=a&sort=b is a list)."""
    listed = None if spec.vary_query is None else {n.encode() for n in spec.vary_query}
    pairs: list[tuple[bytes, bytes]] = []
    for piece in query.split(b"&"):
        if not piece:
            continue
        name, equals, value = piece.partition(b"=")
        name = unquote_to_bytes(name.replace(b"+", b" "))
        if listed is None or name in listed:
            pairs.append((name, equals + unquote_to_bytes(value.replace(b"+", b" "))))
    pairs.sort(key=lambda pair: pair[0])
    return b"&".join(name + b"\x01" + value for name, value in pairs)


def variant_key(base: str, names: list[str], ctx: RequestContext) -> str:
    """The key under the upstream's Vary: the values of the headers it names, as the upstream
    received them (after the route's transform)."""
    values = [upstream_value(ctx, name.encode("latin-1")) for name in names]
    return f"{base}:{_digest(values)}"


def fresh_seconds(
    spec: CacheSpec, status: int, headers: Headers
) -> tuple[int, list[str], bool] | None:
    """How long this answer may be served, the header names its Vary lists, and whether it may
    be served stale on error (not under must-revalidate or proxy-revalidate); None when it
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
        if name == b"content-type" and value.split(b";")[0].strip().lower() == b"text/event-stream":
            return None  # a live stream: never stored, and never waited for by coalesced misses
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
    stale_ok = not {"must-revalidate", "proxy-revalidate"} & directives.keys()
    return (ttl, sorted(set(vary)), stale_ok) if ttl > 0 else None


def _seconds(text: str | None) -> int:
    return int(text) if text is not None and text.isascii() and text.isdigit() else 0


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
    """The 304's headers when the client's copy is current, else None (never for an entry
    that is not a success: a 404 is no copy to keep)."""
    if not 200 <= entry.status < 300:
        return None
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
