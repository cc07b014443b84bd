"""Cache: answer a caching route's GET or HEAD from the shared cache, or forward and store.

A route without `cache` goes straight to forward. On one that has it:

- BYPASS: a method other than GET/HEAD, a Range request, or a caller with credentials
  (Authorization, X-API-Key, Cookie) on a route without `per_user` (with it, the caller's id is
  part of the key). An authenticated answer leaves with `Cache-Control: private` unless the
  upstream said otherwise, so no cache past the gateway keeps it either.
- HIT: a fresh entry, sent with its `Age` and an `ETag` (the upstream's, or a hash of the body);
  `If-None-Match` / `If-Modified-Since` that match get 304.
- MISS: the request goes upstream without the client's conditional headers (so a whole answer
  comes back to store), and the answer streams to the client as it arrives while a copy is kept,
  up to `max_entry_bytes` (past it, the copy is dropped: never buffered). Stored when it is
  complete and the rules of routing.proxy.response_cache allow it.
- Coalescing: concurrent misses for one key make one upstream call. Within a process the others
  await the first one's answer; across processes the first takes a short Redis lock and the
  others poll for its entry; both bounded by PORTIER_CACHE_COALESCE_WAIT, after which a waiter
  asks the upstream itself.
- STALE: with `stale_if_error`, an entry past its freshness is kept that much longer and served
  when the upstream fails (connect error, timeout, 5xx).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from django.conf import settings

from routing.config.cache import CacheSpec
from routing.proxy.cache_store import store_add, store_get, store_release, store_set
from routing.proxy.compression import compressible, varied
from routing.proxy.context import GatewayError, GatewayResponse, Headers, RequestContext
from routing.proxy.response_cache import (
    Entry,
    base_key,
    decode,
    encode_entry,
    encode_vary,
    fresh_seconds,
    not_modified,
    stored_headers,
    strong_etag,
    variant_key,
)
from routing.proxy.stages.forward import UpstreamBroken, forward

__all__ = ["forward_cached"]

_CREDENTIALS = (b"authorization", b"x-api-key", b"cookie")
_CONDITIONAL = frozenset({b"if-none-match", b"if-modified-since"})
_UPSTREAM_FAILED = frozenset({500, 502, 503, 504})
_POLL = 0.025
_LOCK_MS = 5000
# A flight lands with the entry, the upstream's Vary names and the key it is stored under (a
# waiter under that Vary may only take it when its own key is the same), or None.
_Landed = tuple[Entry, list[str], str] | None
_Flights = dict[tuple[asyncio.AbstractEventLoop, str], "asyncio.Future[_Landed]"]
_flights: _Flights = {}
_background: set[asyncio.Task[None]] = set()  # stores and lock releases the answer outlives
_BYPASS = object()


async def forward_cached(ctx: RequestContext) -> GatewayResponse:
    route = ctx.route
    spec = route.cache if route is not None else None
    if spec is None:
        return await forward(ctx)
    user = _cache_user(spec, ctx)
    if user is _BYPASS or ctx.method not in ("GET", "HEAD") or ctx.header(b"range"):
        ctx.cache_result = "BYPASS"
        response = await forward(ctx)
        return _marked(response, b"BYPASS", private=_has_credentials(ctx))
    assert user is None or isinstance(user, str)
    base = base_key(spec, ctx, user)
    entry = await _lookup(base, ctx)
    now = time.time()
    if entry is not None and now < entry.fresh_until:
        return _served(entry, ctx, "HIT", now, private=user is not None)
    if ctx.method == "HEAD":  # nothing to store from an answer without a body
        ctx.cache_result = "MISS"
        return _marked(await forward(ctx), b"MISS", private=user is not None)
    return await _fetch(ctx, spec, base, entry, private=user is not None)


def _has_credentials(ctx: RequestContext) -> bool:
    return any(name in _CREDENTIALS for name, _ in ctx.headers)


def _cache_user(spec: CacheSpec, ctx: RequestContext) -> str | object | None:
    """Whose entry this request may read: None for the shared one, the caller's id with
    `per_user`, or _BYPASS."""
    if not _has_credentials(ctx):
        return None
    identity = ctx.identity
    if spec.per_user and identity is not None:
        # Everything the upstream is told about the caller: a token of the same user with
        # fewer roles, or an API key, gets an entry of its own.
        roles = ",".join(sorted(identity.roles))
        return "\x00".join(
            (identity.method, identity.subject, identity.key_prefix, identity.email, roles)
        )
    return _BYPASS


async def _lookup(base: str, ctx: RequestContext) -> Entry | None:
    found = decode(await store_get(base))
    if isinstance(found, list):  # the upstream's Vary: one entry per value of those headers
        found = decode(await store_get(variant_key(base, found, ctx)))
    return found if isinstance(found, Entry) else None


async def _fetch(
    ctx: RequestContext, spec: CacheSpec, base: str, stale: Entry | None, *, private: bool
) -> GatewayResponse:
    """One upstream call per key at a time: lead it, or wait for the one in flight."""
    loop = asyncio.get_running_loop()
    wait = settings.PORTIER_CACHE_COALESCE_WAIT
    flight = _flights.get((loop, base))
    if flight is not None and wait:
        try:
            entry = _taken(await asyncio.wait_for(asyncio.shield(flight), wait), base, ctx)
        except TimeoutError:
            entry = None
        if entry is not None:
            return _served(entry, ctx, "HIT", time.time(), private=private)
        return await _forward_and_store(ctx, spec, base, stale, None, None, private=private)
    lock = base + ":lock"
    token: bytes | None = os.urandom(8).hex().encode() if wait else None
    if token is not None and not await store_add(lock, token, _LOCK_MS):
        token = None  # another process holds it: wait for its entry, then go alone
        entry = await _wait_elsewhere(base, lock, ctx, loop.time() + wait)
        if entry is not None:
            return _served(entry, ctx, "HIT", time.time(), private=private)
    future: asyncio.Future[_Landed] = loop.create_future()
    _flights[loop, base] = future
    try:
        return await _forward_and_store(ctx, spec, base, stale, future, token, private=private)
    except BaseException:
        _land(loop, base, future, token)
        raise


def _taken(landed: _Landed, base: str, ctx: RequestContext) -> Entry | None:
    """The flight's entry when it is this request's: under the upstream's Vary, only for the
    same values of those headers."""
    if landed is None:
        return None
    entry, vary, key = landed
    return entry if (variant_key(base, vary, ctx) if vary else base) == key else None


async def _wait_elsewhere(
    base: str, lock: str, ctx: RequestContext, deadline: float
) -> Entry | None:
    """Another process is fetching this key: poll for its entry while its lock stands."""
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        await asyncio.sleep(_POLL)
        entry = await _lookup(base, ctx)
        if entry is not None and time.time() < entry.fresh_until:
            return entry
        if await store_get(lock) is None:  # it is done, and stored nothing usable
            return None
    return None


def _land(
    loop: asyncio.AbstractEventLoop,
    base: str,
    future: asyncio.Future[_Landed] | None,
    token: bytes | None,
) -> None:
    """End a flight that stores nothing: its waiters ask the upstream themselves."""
    if future is None:
        return
    if _flights.get((loop, base)) is future:
        del _flights[loop, base]
    if not future.done():
        future.set_result(None)
    _release(base, token)


def _release(base: str, token: bytes | None) -> None:
    """Let the other processes' waiters go: only the lock this flight took, never another's."""
    if token is not None:
        _later(store_release(base + ":lock", token))


async def _forward_and_store(
    ctx: RequestContext,
    spec: CacheSpec,
    base: str,
    stale: Entry | None,
    future: asyncio.Future[_Landed] | None,
    token: bytes | None,
    *,
    private: bool,
) -> GatewayResponse:
    ctx.cache_result = "MISS"
    ctx.upstream_headers = [h for h in ctx.upstream_headers if h[0] not in _CONDITIONAL]
    usable = stale if stale is not None and time.time() <= stale.stale_until else None
    loop = asyncio.get_running_loop()
    try:
        response = await forward(ctx)
    except GatewayError as exc:
        if usable is not None and exc.status in _UPSTREAM_FAILED:
            _land(loop, base, future, token)
            return _served(usable, ctx, "STALE", time.time(), private=private)
        raise
    if usable is not None and response.status in _UPSTREAM_FAILED:
        if response.close is not None:
            await response.close()
        _land(loop, base, future, token)
        return _served(usable, ctx, "STALE", time.time(), private=private)
    try:
        rules = fresh_seconds(spec, response.status, response.headers)
        if rules is None or response.stream is None or _too_long(response.headers, spec):
            _land(loop, base, future, token)
            return _marked(response, b"MISS", private=private)
        ttl, vary, stale_ok = rules
        if not stale_ok:  # must-revalidate: never served past its freshness
            spec = dataclasses.replace(spec, stale_if_error=0)
        headers = stored_headers(response.headers, ctx.response_headers)
        kept = _kept(response.stream, ctx, spec, base, (future, token), headers, ttl, vary)
        if any(name in _CONDITIONAL for name, _ in ctx.headers):
            return await _conditional_miss(
                ctx, spec, response, kept, (headers, ttl, usable), private=private
            )
    except BaseException:
        # Whatever failed, the upstream's answer and its target are let go (the lease).
        if response.close is not None:
            await response.close()
        _land(loop, base, future, token)
        raise
    response.stream = kept
    return _marked(response, b"MISS", private=private)


async def _conditional_miss(
    ctx: RequestContext,
    spec: CacheSpec,
    response: GatewayResponse,
    kept: AsyncIterator[bytes],
    stored: tuple[Headers, int, Entry | None],
    *,
    private: bool,
) -> GatewayResponse:
    """A client that may hold this answer already: read it whole (it fits an entry, or it is
    streamed on as usual once it does not) to answer 304 when the client's copy matches."""
    headers, ttl, usable = stored
    held: list[bytes] = []
    size = 0
    try:
        async for chunk in kept:
            held.append(chunk)
            size += len(chunk)
            if size > spec.max_entry_bytes:
                response.stream = _chained(held, kept)
                return _marked(response, b"MISS", private=private)
    except UpstreamBroken:
        # Nothing was sent yet: the client gets the stale entry, or a clean 502.
        if response.close is not None:
            await response.close()
        if usable is not None:
            return _served(usable, ctx, "STALE", time.time(), private=private)
        raise GatewayError(502, "upstream_error", "The upstream connection failed.") from None
    except BaseException:  # the request was cut: no answer of its own will be sent to close
        if response.close is not None:
            await response.close()
        raise
    if response.close is not None:
        await response.close()
    status = ctx.upstream_status
    ctx.bytes_out -= size  # counted again as the answer is sent
    answer = _served(
        _entry(ctx, spec, headers, b"".join(held), ttl), ctx, "MISS", time.time(), private=private
    )
    ctx.upstream_status = status
    return answer


async def _chained(held: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in held:
        yield chunk
    async for chunk in rest:
        yield chunk


def _entry(ctx: RequestContext, spec: CacheSpec, headers: Headers, body: bytes, ttl: int) -> Entry:
    now = time.time()
    etag = next((v for n, v in headers if n == b"etag"), None) or strong_etag(body)
    return Entry(
        status=ctx.upstream_status or 200,
        headers=headers,
        body=body,
        etag=etag,
        stored_at=now,
        fresh_until=now + ttl,
        stale_until=now + ttl + spec.stale_if_error,
    )


def _too_long(headers: Headers, spec: CacheSpec) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return not value.isdigit() or int(value) > spec.max_entry_bytes
    return False


async def _kept(
    stream: AsyncIterator[bytes],
    ctx: RequestContext,
    spec: CacheSpec,
    base: str,
    flight: tuple[asyncio.Future[_Landed] | None, bytes | None],
    headers: Headers,
    ttl: int,
    vary: list[str],
) -> AsyncIterator[bytes]:
    """The answer as it streams to the client, with a copy kept to store once it is whole."""
    loop = asyncio.get_running_loop()
    future, token = flight
    held: list[bytes] | None = []
    size = 0
    entry: Entry | None = None
    try:
        async for chunk in stream:
            if held is not None:
                size += len(chunk)
                if size > spec.max_entry_bytes:
                    # Too large to keep: streamed through, never stored, and the waiters need
                    # not wait for the rest of it.
                    held = None
                    _land(loop, base, future, token)
                else:
                    held.append(chunk)
            yield chunk
        if held is not None:
            entry = _entry(ctx, spec, headers, b"".join(held), ttl)
            _later(_store(base, entry, ttl + spec.stale_if_error, vary, ctx, token))
    finally:
        if entry is not None:
            if future is not None and not future.done():
                if _flights.get((loop, base)) is future:
                    del _flights[loop, base]
                key = variant_key(base, vary, ctx) if vary else base
                future.set_result((entry, vary, key))
        elif held is not None:  # cut short: nothing to store (a landed flight is left alone)
            _land(loop, base, future, token)


def _later(work: Coroutine[Any, Any, None]) -> None:
    """Run after the answer, holding a reference so the task is not collected half done."""
    task = asyncio.get_running_loop().create_task(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _store(
    base: str,
    entry: Entry,
    seconds: int,
    vary: list[str],
    ctx: RequestContext,
    token: bytes | None,
) -> None:
    """Write the entry (and, under an upstream Vary, the names at the base key), then let the
    other processes' waiters go."""
    try:
        if vary:
            await store_set(base, encode_vary(vary), seconds)
            await store_set(variant_key(base, vary, ctx), encode_entry(entry), seconds)
        else:
            await store_set(base, encode_entry(entry), seconds)
    finally:
        if token is not None:
            await store_release(base + ":lock", token)


def _served(
    entry: Entry, ctx: RequestContext, result: str, now: float, *, private: bool
) -> GatewayResponse:
    """An answer from an entry: per-request headers written afresh, or 304."""
    ctx.cache_result = result
    ctx.upstream_status = None
    tail = [
        (b"age", entry.age(now)),
        (b"x-cache", result.encode()),
        (b"x-request-id", ctx.request_id.encode()),
        *ctx.response_headers,
    ]
    unchanged = not_modified(entry, ctx) if result != "STALE" else None
    if unchanged is not None:
        if _compressed_when_whole(entry, ctx):  # a 304 varies as its 200 would (RFC 9110 15.4.5)
            unchanged = varied(unchanged)
        return _marked_private(
            GatewayResponse(304, unchanged + tail, stream=_body(b"", ctx)), private
        )
    headers = list(entry.headers)
    if not any(name == b"etag" for name, _ in headers):
        headers.append((b"etag", entry.etag))
    body = b"" if ctx.method == "HEAD" else entry.body
    response = GatewayResponse(entry.status, headers + tail, stream=_body(body, ctx))
    return _marked_private(response, private)


def _compressed_when_whole(entry: Entry, ctx: RequestContext) -> bool:
    """Whether the entry, served whole, would be compressed for a client that takes it
    (routing.proxy.stages.answer), and so say `Vary: Accept-Encoding`."""
    assert ctx.route is not None  # only a caching route has entries (forward_cached)
    minimum = ctx.route.edge.compression_min_bytes
    return bool(minimum) and compressible(entry.status, "GET", entry.headers, minimum)


async def _body(body: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
    if body:
        ctx.bytes_out += len(body)
        yield body


def _marked(response: GatewayResponse, result: bytes, *, private: bool) -> GatewayResponse:
    if response.error_code is None:  # the gateway's word replaces an upstream cache's
        kept = [h for h in response.headers if h[0] != b"x-cache"]
        response.headers = [*kept, (b"x-cache", result)]
    return _marked_private(response, private)


def _marked_private(response: GatewayResponse, private: bool) -> GatewayResponse:
    """An answer to a caller with credentials says so to any cache past the gateway."""
    if (
        private
        and response.error_code is None
        and not any(name == b"cache-control" for name, _ in response.headers)
    ):
        response.headers = [*response.headers, (b"cache-control", b"private")]
    return response
