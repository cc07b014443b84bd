"""Django views: the proxy view (the pipeline's Django entry), /health, and JSON error pages."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from http.cookies import Morsel, SimpleCookie
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections, connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from audit.recording import audit_close
from routing import pipeline
from routing.client_ip import address_in, resolve_client_ip
from routing.context import GatewayResponse, RequestContext
from routing.errors import error_body
from routing.forward import close_clients
from routing.health import data_plane_start, data_plane_started
from routing.metrics import IN_FLIGHT, exposition
from routing.record import record
from routing.snapshot import holder
from routing.status import services_report

__all__ = [
    "health",
    "health_services",
    "metrics",
    "not_found",
    "proxy",
    "reserved_not_found",
    "server_error",
]


@csrf_exempt
async def proxy(request: HttpRequest) -> HttpResponse:
    """Run the gateway pipeline for a request that reached Django's own handler."""
    IN_FLIGHT.inc()
    try:
        # A streamed answer leaves the count when the view returns, before its body is sent:
        # this entry serves tests and runserver, the served stack counts in routing.asgi_entry.
        return await _proxy(request)
    finally:
        IN_FLIGHT.dec()


async def _proxy(request: HttpRequest) -> HttpResponse:
    await data_plane_started()
    ctx = _context_from_request(request)
    if getattr(request, "scope", None) is not None:
        response = await pipeline.run(ctx)
        if response.stream is None:
            await audit_close(ctx, response.error_code)
        return _to_django(response, ctx)
    # Under WSGI (runserver, the sync test client) every request gets an event loop of its own
    # that dies with it: read the whole answer in this loop, then close this loop's client.
    try:
        response = await pipeline.run(ctx)
        if response.stream is not None:
            response.body = b"".join([chunk async for chunk in response.stream])
            response.stream = None
    finally:
        await close_clients()
    await audit_close(ctx, response.error_code)
    return _to_django(response, ctx)


def _context_from_request(request: HttpRequest) -> RequestContext:
    scope: dict[str, Any] | None = getattr(request, "scope", None)
    if scope is not None:
        headers = list(scope["headers"])
        raw_path = scope.get("raw_path") or scope["path"].encode()
    else:  # WSGI: rebuild the header list from META
        headers = [
            (key[5:].replace("_", "-").lower().encode("latin-1"), value.encode("latin-1"))
            for key, value in request.META.items()
            if key.startswith("HTTP_")
        ]
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if request.META.get(key):
                headers.append((key.replace("_", "-").lower().encode(), request.META[key].encode()))
        raw_path = request.path.encode()
    body = request.body

    async def receive_body() -> AsyncIterator[bytes]:
        yield body

    ctx = RequestContext(
        method=request.method or "GET",
        scheme=request.scheme or "http",
        raw_path=raw_path,
        query_string=request.META.get("QUERY_STRING", "").encode("latin-1"),
        headers=headers,
        client_ip=resolve_client_ip(
            request.META.get("REMOTE_ADDR", ""),
            [value for name, value in headers if name == b"x-forwarded-for"],
        ),
        peer_ip=request.META.get("REMOTE_ADDR", ""),
        receive_body=receive_body,
        has_body=bool(body),
        bytes_in=len(body),
        snapshot=holder.current,
    )
    ctx.request_id = pipeline.request_id_from(ctx.header(b"x-request-id"))
    return ctx


class _RawMorsel(Morsel):
    """A cookie that Django writes out as the upstream's own Set-Cookie line, byte for byte
    (re-rendering would rewrite attributes), while still readable as a normal Morsel."""

    def __init__(self, line: str) -> None:
        super().__init__()
        name, _, rest = line.partition("=")
        value = rest.split(";", 1)[0].strip()
        self._key, self._value, self._coded_value = name.strip(), value, value
        self.line = line

    def output(self, attrs: Any = None, header: str = "Set-Cookie:") -> str:
        return f"{header} {self.line}".strip()


def _raw_cookies(lines: list[str]) -> SimpleCookie:
    cookies = SimpleCookie()
    for index, line in enumerate(lines):
        # Indexed keys: two cookies of one name (different paths) must both reach the client.
        dict.__setitem__(cookies, f"{index}:{line.partition('=')[0].strip()}", _RawMorsel(line))
    return cookies


def _to_django(response: GatewayResponse, ctx: RequestContext) -> HttpResponse:
    if response.stream is None:
        out: HttpResponse = HttpResponse(response.body, status=response.status)
        record(ctx, response.error_code)
    else:
        out = StreamingHttpResponse(
            _recording(response.stream, ctx, response.error_code), status=response.status
        )
    cookies = []
    for name, value in response.headers:
        if name == b"set-cookie":
            cookies.append(value.decode("latin-1"))
        else:
            out.headers[name.decode("latin-1")] = value.decode("latin-1")
    if "content-type" not in out.headers:
        del out.headers["Content-Type"]
    if cookies:
        out.cookies = _raw_cookies(cookies)
    return out


async def _recording(
    stream: AsyncIterator[bytes], ctx: RequestContext, error_code: str | None
) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield chunk
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await audit_close(ctx, error_code)
        record(ctx, error_code)


async def health(request: HttpRequest) -> JsonResponse:
    """Liveness and dependencies: always 200 while the process serves; `status` says degraded.

    Each dependency check is bounded (CHECK_TIMEOUT): a hung database or Redis makes the answer
    degraded, never late, so a load balancer's probe does not time out and pull the instance.
    """
    await data_plane_started()
    snapshot = holder.current
    database, cache_state = await asyncio.gather(
        _bounded("database", _check_database), _bounded("cache", _check_cache)
    )
    checks = {"database": database, "cache": cache_state}
    # Skipped routes are configuration the admins saved and nobody is served: worth an alert.
    degraded = (
        any(value != "ok" for value in checks.values())
        or holder.last_error is not None
        or bool(snapshot.skipped)
    )
    return JsonResponse(
        {
            "status": "degraded" if degraded else "ok",
            "config": {
                "version": snapshot.version,
                "token": snapshot.token,
                "age_seconds": round(time.time() - snapshot.built_at, 3)
                if snapshot.built_at
                else None,
                "routes": len(snapshot.routes),
                "skipped_routes": list(snapshot.skipped),
                # The kind only: a driver's message can name internal hosts (the log has it).
                "refresh_error": holder.last_error.partition(":")[0] if holder.last_error else None,
            },
            "checks": checks,
        }
    )


def health_services(request: HttpRequest) -> HttpResponse:
    """Each service with each target's state: 200 while every enabled service has an available
    target, 503 otherwise. It shows upstream addresses, so only operators may read it."""
    if not _is_operator(request):
        return _json_error(403, "forbidden", "This endpoint is for operators only.")
    data_plane_start()
    ok, report = services_report(holder.current)
    return JsonResponse(report, status=200 if ok else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics of this instance (every worker process). They name routes, services
    and upstream addresses, so only operators may read them."""
    if not _is_operator(request):
        return _json_error(403, "forbidden", "This endpoint is for operators only.")
    data_plane_start()
    body, content_type = exposition(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)


def _is_operator(request: HttpRequest) -> bool:
    token = settings.PORTIER_OPS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if hmac.compare_digest(given.encode(), token.encode()):
            return True
    forwarded = request.headers.get("X-Forwarded-For")
    client = resolve_client_ip(
        request.META.get("REMOTE_ADDR", ""), [forwarded.encode("latin-1")] if forwarded else []
    )
    return address_in(client, settings.PORTIER_OPS_NETWORKS)


# Seconds a /health answer waits for one dependency check; well inside a load balancer's probe
# timeout (commonly 2-5 s), and above a healthy check's few milliseconds.
CHECK_TIMEOUT = 1.0
# The checks' own threads: a hung dependency holds these, never Django's one sync thread (the
# admin's) nor the executor the proxy writes audit rows with.
_checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="portier-health-check")
_running: dict[str, Future[str]] = {}


async def _bounded(name: str, check: Callable[[], str]) -> str:
    """The check's result, or "error: timeout". A check still running from an earlier probe is
    awaited again rather than started twice, so probes against a hung dependency pile no threads.
    """
    future = _running.get(name)
    if future is None or future.done():
        future = _running[name] = _checks.submit(check)
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), CHECK_TIMEOUT)
    except TimeoutError:
        return "error: timeout"


def _check_database() -> str:
    try:
        close_old_connections()  # a long-lived thread: drop a connection the database broke
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


def _check_cache() -> str:
    try:
        cache.set("health:probe", "1", 5)
        ok = cache.get("health:probe") == "1"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    kind = "redis" if settings.REDIS_URL else "in-process"
    return "ok" if ok else f"error: {kind} cache did not keep a value"


def _json_error(status: int, code: str, message: str) -> HttpResponse:
    return HttpResponse(
        error_body(code, message, ""), status=status, content_type="application/json"
    )


def reserved_not_found(request: HttpRequest) -> HttpResponse:
    return _json_error(404, "not_found", "This gateway path does not exist.")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _json_error(404, "not_found", "This gateway path does not exist.")


def server_error(request: HttpRequest) -> HttpResponse:
    return _json_error(500, "internal_error", "The gateway failed to handle the request.")
