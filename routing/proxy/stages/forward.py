"""Forward: send the request to one target of the route's service and stream the answer back.

Requests and responses are httpx objects, sent through one pooled transport per event loop (so per
process in production) that keeps connections to upstreams alive (routing.upstream.transport
explains why it is aiohttp's pool underneath). The transport is called directly, not through
httpx.AsyncClient.send: the client would feed every upstream Set-Cookie into a process-wide cookie
jar. The response body is relayed chunk by chunk and never held whole in memory. The request
body is refused with 413 past the route's limit (its own, else PORTIER_MAX_BODY_BYTES): from its
Content-Length before anything is read, or as soon as a chunked body passes it. A chunked body
is read whole up to PORTIER_CHUNKED_BUFFER_BYTES and sent with a Content-Length, as NGINX does:
many simple upstreams read a body by its Content-Length only and would see none; a larger one,
or any on a route with `stream_uploads`, is streamed through chunked. Server-sent events
(text/event-stream) are relayed as each piece arrives, never compressed or cached, and once their
head has come they are bounded by PORTIER_STREAM_IDLE_TIMEOUT (silence between two reads) instead
of the service's read timeout. Which target,
and what each attempt did to its in-flight count and health, is the lease's business
(routing.upstream.lease); this stage decides what to try next and what the client is told.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx

from routing.config.spec import RouteSpec, ServiceSpec, TargetSpec
from routing.hot_settings import hot_settings
from routing.proxy.context import GatewayError, GatewayResponse, RequestContext
from routing.proxy.headers import drop_hop_by_hop
from routing.upstream import health
from routing.upstream.lease import Lease, Overloaded
from routing.upstream.transport import upstream_client

__all__ = ["UpstreamBroken", "forward"]

logger = logging.getLogger("portier.forward")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_BODY_LIMIT = 64 * 1024  # bytes of request body held to allow a retry
# The rest of a refused body is never read: the connection ends with the answer.
_CLOSE = [(b"connection", b"close")]

Body = bytes | AsyncIterator[bytes] | None


class UpstreamBroken(Exception):
    """The upstream failed after its answer had started: the client connection must be cut."""


async def forward(ctx: RequestContext) -> GatewayResponse:
    route = ctx.route
    assert route is not None
    service = route.service
    if not service.targets and not health.board.instances.get(service.name):
        raise GatewayError(503, "upstream_unavailable", "The service has no enabled target.")
    # Before a target is taken: a refused or buffered body holds no upstream capacity.
    content, retryable = await _request_body(ctx, route)
    try:
        lease = Lease(service, _sticky_key(service, ctx))
    except Overloaded:
        raise GatewayError(
            503,
            "overloaded",
            "The service is at capacity; try again shortly.",
            [(b"retry-after", b"1")],
        ) from None
    try:
        response = await _send(ctx, lease, content, retryable)
    except BaseException:
        lease.close()
        raise
    # httpx keeps the upstream's header-name case (NGINX sends "Connection"): compare lowered.
    headers = [(name.lower(), value) for name, value in response.headers.raw]
    headers = drop_hop_by_hop(headers, frozenset({b"x-request-id"}))
    headers.append((b"x-request-id", ctx.request_id.encode()))
    headers.extend(ctx.response_headers)

    async def close() -> None:
        try:
            await response.aclose()
        finally:
            lease.close()

    return GatewayResponse(response.status_code, headers, stream=_relay(response, ctx), close=close)


def _sticky_key(service: ServiceSpec, ctx: RequestContext) -> bytes | None:
    """The value that keeps a caller on one target under consistent hashing; None falls back to
    round-robin (and is all other algorithms need)."""
    if service.balancing != "consistent_hash":
        return None
    if service.hash_on == "header":
        return ctx.header(service.hash_header) or None
    if service.hash_on == "user" and ctx.identity is not None:
        return ctx.identity.subject.encode()
    return ctx.client_ip.encode() or None


async def _send(
    ctx: RequestContext, lease: Lease, content: Body, retryable: bool
) -> httpx.Response:
    """Try targets until one answers, within the retry rules and the service's time budget."""
    service = lease.service
    attempts = 1 + service.retries if retryable else 1
    client = upstream_client()
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + service.total_timeout if service.total_timeout else None
    target = lease.pick()
    if target is None:
        raise GatewayError(
            503, "upstream_unavailable", "No healthy target of the service is available."
        )
    for attempt in range(attempts):
        if attempt and deadline is not None and loop.time() >= deadline:
            raise GatewayError(504, "upstream_timeout", "The upstream did not answer in time.")
        last = attempt + 1 == attempts
        ctx.target_url = target.key
        raw_path = _raw_path(ctx, target)
        extensions = {
            "timeout": service.timeout,
            "stream_idle_timeout": hot_settings.PORTIER_STREAM_IDLE_TIMEOUT,
        }
        if raw_path.isascii():
            # The transport joins the target's URL and this path itself: an httpx URL parsed
            # per request cost a twentieth of the event loop (bench --profile).
            url, extensions["target"] = target.origin, (target.url, raw_path)
        else:
            url = target.origin.copy_with(raw_path=raw_path)
        request = _upstream_request(ctx, url, content, extensions)
        try:
            # The budget also bounds the wait for a free pooled connection, which aiohttp's own
            # timeouts do not: a full pool is this process's state, never a target's failure.
            async with asyncio.timeout_at(deadline):
                response = await client.handle_async_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # The request never reached the upstream: safe to send again, anywhere.
            lease.failed()
            logger.warning("upstream %s refused %s: %r", target.key, ctx.request_id, exc)
            following = None if last else lease.pick()
            if following is not None:
                target = following
                continue
            if isinstance(exc, httpx.ConnectTimeout):
                raise GatewayError(
                    504, "upstream_timeout", "The upstream did not accept the connection in time."
                ) from None
            raise GatewayError(
                502, "upstream_unavailable", "The upstream refused the connection."
            ) from None
        except TimeoutError:  # the service's budget ran out: not this attempt's target's fault
            lease.abandoned()
            raise GatewayError(
                504, "upstream_timeout", "The upstream did not answer in time."
            ) from None
        except httpx.TimeoutException:
            lease.failed()
            raise GatewayError(
                504, "upstream_timeout", "The upstream did not answer in time."
            ) from None
        except httpx.TransportError as exc:
            lease.failed()
            logger.warning("upstream %s failed %s: %r", target.key, ctx.request_id, exc)
            raise GatewayError(502, "upstream_error", "The upstream connection failed.") from None
        except BaseException:  # cancelled, or ClientGone: the client went away
            lease.abandoned()
            raise
        status = response.status_code
        lease.answered(status)
        if status in service.retry_statuses and not last:
            # Retried only when another attempt can go out; else this answer is the answer.
            following = lease.pick()
            if following is not None:
                await response.aclose()
                target = following
                continue
        ctx.upstream_seconds = loop.time() - started
        ctx.upstream_status = status
        ctx.target = target
        return response
    raise AssertionError("unreachable: the last attempt returns or raises")


def _upstream_request(
    ctx: RequestContext, url: httpx.URL, content: Body, extensions: dict[str, object]
) -> httpx.Request:
    """The httpx request as the client sent it, with no header added by httpx.

    Given a stream rather than content, httpx adds no Host, Content-Length or Transfer-Encoding
    of its own (and skips parsing its headers twice to add them: ~4 % of the event loop, bench
    --profile): the transport's pool writes Host from the URL and frames the body itself, a
    Content-Length for bytes (0 for a body-less POST, PUT or PATCH), chunked for a stream.
    """
    stream: httpx.AsyncByteStream
    if isinstance(content, bytes) or content is None:
        stream = httpx.ByteStream(content or b"")
    else:
        stream = _ClientStream(content)
    request = httpx.Request(
        ctx.method, url, headers=ctx.upstream_headers, stream=stream, extensions=extensions
    )
    if isinstance(stream, httpx.ByteStream):
        request.read()  # held bytes: request.content, which a retry sends again
    return request


class _ClientStream(httpx.AsyncByteStream):
    """A request body streamed from the client as it arrives (never retried)."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk


async def _request_body(ctx: RequestContext, route: RouteSpec) -> tuple[Body, bool]:
    """The body to send, and whether the request may be sent more than once.

    A body can be streamed only once: a small one (a declared length up to RETRY_BODY_LIMIT, or
    a buffered chunked one) is held, so it can be sent again; a streamed one is never retried.
    """
    service = route.service
    retryable = service.retries > 0 and (ctx.method in IDEMPOTENT or route.retry_unsafe_methods)
    if ctx.body is not None:  # read and rewritten by a body transform
        return ctx.body, retryable
    if not ctx.has_body or ctx.receive_body is None:
        return None, retryable
    limit = route.max_body_bytes or hot_settings.PORTIER_MAX_BODY_BYTES
    length = ctx.header(b"content-length")
    if length is not None and length.strip().isdigit():  # the framing stage refused the rest
        declared = int(length)
        if declared > limit:
            raise _too_large(limit)
        if retryable and declared <= RETRY_BODY_LIMIT:
            return b"".join([chunk async for chunk in ctx.receive_body()]), True
        return ctx.receive_body(), False
    body = _bounded(ctx.receive_body(), limit)
    buffer = 0 if route.stream_uploads else hot_settings.PORTIER_CHUNKED_BUFFER_BYTES
    held: list[bytes] = []
    size = 0
    if buffer:
        async for chunk in body:
            held.append(chunk)
            size += len(chunk)
            if size > buffer:
                return _chained(held, body), False
        return b"".join(held), retryable and size <= RETRY_BODY_LIMIT
    return body, False


async def _bounded(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """A chunked body, refused (413) the moment it passes `limit`: raised from inside the
    upstream call, it ends that call before the body's last chunk, so the upstream never
    receives a complete request."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            raise _too_large(limit)
        yield chunk


async def _chained(held: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in held:
        yield chunk
    async for chunk in rest:
        yield chunk


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, "payload_too_large", f"The request body is larger than {limit} bytes.", _CLOSE
    )


def _raw_path(ctx: RequestContext, target: TargetSpec) -> bytes:
    path = (target.base_path + ctx.upstream_path).encode("ascii")
    query = ctx.query_string if ctx.upstream_query is None else ctx.upstream_query
    return path + b"?" + query if query else path


async def _relay(response: httpx.Response, ctx: RequestContext) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            ctx.bytes_out += len(chunk)
            yield chunk
    except httpx.HTTPError as exc:
        logger.warning("upstream %s broke mid-answer %s: %r", ctx.target_url, ctx.request_id, exc)
        raise UpstreamBroken(str(exc)) from None
    finally:
        await response.aclose()
