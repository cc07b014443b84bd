"""Stage 6, forward: send the request to one target of the route's service and stream the answer.

Requests and responses are httpx objects, sent through one pooled transport per event loop (so per
process in production) that keeps connections to upstreams alive (routing.transport explains why
it is aiohttp's pool underneath). The transport is called directly, not through
httpx.AsyncClient.send: the client would feed every upstream Set-Cookie into a process-wide cookie
jar. The response body is relayed chunk by chunk and never held whole in memory.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from math import gcd

import httpx
from django.conf import settings

from routing.context import GatewayError, GatewayResponse, RequestContext
from routing.snapshot import ServiceSpec, TargetSpec
from routing.transform import drop_hop_by_hop
from routing.transport import AiohttpTransport

__all__ = ["UpstreamBroken", "close_clients", "forward", "upstream_client"]

logger = logging.getLogger("portier.forward")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_clients: dict[asyncio.AbstractEventLoop, AiohttpTransport] = {}
_in_flight: Counter[str] = Counter()
_schedules: dict[tuple[str, tuple[TargetSpec, ...]], tuple[list[int], itertools.count[int]]] = {}


class UpstreamBroken(Exception):
    """The upstream failed after its answer had started: the client connection must be cut."""


def upstream_client() -> AiohttpTransport:
    """The shared transport (connection pool) of the running event loop, made on first use."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        limits = httpx.Limits(
            max_connections=settings.PORTIER_UPSTREAM_MAX_CONNECTIONS,
            max_keepalive_connections=settings.PORTIER_UPSTREAM_KEEPALIVE,
            keepalive_expiry=30.0,
        )
        client = AiohttpTransport(limits)
        _clients[loop] = client
    return client


async def close_clients() -> None:
    loop = asyncio.get_running_loop()
    client = _clients.pop(loop, None)
    if client is not None:
        await client.aclose()


def _pick(service: ServiceSpec) -> TargetSpec:
    """Smooth weighted round-robin over the service's targets (per process)."""
    key = (service.name, service.targets)
    entry = _schedules.get(key)
    if entry is None:
        if len(_schedules) > 1024:  # old configurations' schedules: drop them all, rebuilt lazily
            _schedules.clear()
        entry = (_smooth_wrr(service.targets), itertools.count())
        _schedules[key] = entry
    order, counter = entry
    return service.targets[order[next(counter) % len(order)]]


def _smooth_wrr(targets: tuple[TargetSpec, ...]) -> list[int]:
    divisor = 0
    for t in targets:
        divisor = gcd(divisor, t.weight)
    weights = [t.weight // divisor for t in targets]
    current = [0] * len(targets)
    order: list[int] = []
    for _ in range(sum(weights)):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(targets)), key=current.__getitem__)
        current[best] -= sum(weights)
        order.append(best)
    return order


async def forward(ctx: RequestContext) -> GatewayResponse:
    route = ctx.route
    assert route is not None
    service = route.service
    if not service.targets:
        raise GatewayError(503, "upstream_unavailable", "The service has no enabled target.")
    release = _admit(service)
    try:
        response = await _send(ctx, service)
    except BaseException:
        release()
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
            release()

    return GatewayResponse(response.status_code, headers, stream=_relay(response, ctx), close=close)


def _admit(service: ServiceSpec) -> Callable[[], None]:
    """Count the request in the service's in-flight cap, or shed it with 503 overloaded.

    Per process, on purpose: in-flight requests are this process's own connections and memory,
    the count needs no I/O, and a crashed process cannot leak counts into a shared store. The
    cap for the whole fleet is max_in_flight times the number of processes.
    """
    cap = service.max_in_flight
    if not cap:
        return _nothing
    if _in_flight[service.name] >= cap:
        raise GatewayError(
            503,
            "overloaded",
            "The service is at capacity; try again shortly.",
            [(b"retry-after", b"1")],
        )
    _in_flight[service.name] += 1
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            _in_flight[service.name] -= 1

    return release


def _nothing() -> None:
    return None


async def _send(ctx: RequestContext, service: ServiceSpec) -> httpx.Response:
    # A body can be streamed only once, so only bodyless idempotent requests are retried.
    retryable = ctx.method in IDEMPOTENT and not ctx.has_body
    attempts = 1 + (service.retries if retryable else 0)
    client = upstream_client()
    started = time.perf_counter()
    for attempt in range(attempts):
        target = _pick(service)
        ctx.target_url = target.url
        request = httpx.Request(
            ctx.method,
            target.origin.copy_with(raw_path=_raw_path(ctx, target)),
            headers=ctx.upstream_headers,
            content=ctx.receive_body() if ctx.has_body and ctx.receive_body else None,
            extensions={"timeout": service.timeout},
        )
        try:
            response = await client.handle_async_request(request)
            ctx.upstream_seconds = time.perf_counter() - started
            ctx.upstream_status = response.status_code
            return response
        except httpx.ConnectError as exc:
            logger.warning("upstream %s refused %s: %s", target.url, ctx.request_id, exc)
            if attempt + 1 < attempts:
                continue
            raise GatewayError(
                502, "upstream_unavailable", "The upstream refused the connection."
            ) from None
        except httpx.TimeoutException:
            raise GatewayError(
                504, "upstream_timeout", "The upstream did not answer in time."
            ) from None
        except httpx.TransportError as exc:
            logger.warning("upstream %s failed %s: %r", target.url, ctx.request_id, exc)
            raise GatewayError(502, "upstream_error", "The upstream connection failed.") from None
    raise AssertionError("unreachable: the last attempt returns or raises")


def _raw_path(ctx: RequestContext, target: TargetSpec) -> bytes:
    path = (target.base_path + ctx.upstream_path).encode("ascii")
    return path + b"?" + ctx.query_string if ctx.query_string else path


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
