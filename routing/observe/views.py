"""The operators' endpoints: /health (dependencies), /health/live and /health/ready (an
orchestrator's probes), /health/services (each target's state) and /metrics (Prometheus).
The last two name upstream addresses, so only operators may read them: a bearer token
(PORTIER_OPS_TOKEN) or an address in PORTIER_OPS_NETWORKS."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from routing import dataplane
from routing.config.holder import holder
from routing.config.spec import EMPTY
from routing.observe.metrics import exposition
from routing.observe.service_health import services_report
from routing.proxy.client_ip import address_in, resolve_client_ip
from routing.proxy.errors import json_error, request_id_of

__all__ = ["health", "health_live", "health_ready", "health_services", "metrics"]


async def health(request: HttpRequest) -> JsonResponse:
    """Liveness and dependencies: always 200 while the process serves; `status` says degraded.

    Each dependency check is bounded (CHECK_TIMEOUT): a hung database or Redis makes the answer
    degraded, never late, so a load balancer's probe does not time out and pull the instance.
    """
    await dataplane.started()
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


async def health_live(request: HttpRequest) -> JsonResponse:
    """Liveness: 200 whenever the event loop answers, with no dependency checked. A restart
    cannot mend a degraded Redis or database, and a probe that failed on one would restart every
    instance at once while they were serving from their last-known-good configuration."""
    return JsonResponse({"status": "live"})


async def health_ready(request: HttpRequest) -> JsonResponse:
    """Readiness: 503 until this process holds a configuration (from the cache or, failing
    that, the database), 200 from then on, Redis or database degraded or not: the held
    configuration keeps serving, and pulling every instance out of rotation would turn a
    Redis blip into an outage. A draining process stops accepting connections, which fails
    the probe as surely as a 503."""
    await dataplane.started()
    if holder.current is EMPTY:
        return JsonResponse({"status": "starting", "config": None}, status=503)
    return JsonResponse({"status": "ready", "config": {"version": holder.current.version}})


def health_services(request: HttpRequest) -> HttpResponse:
    """Each service with each target's state: 200 while every enabled service has an available
    target, 503 otherwise. It shows upstream addresses, so only operators may read it."""
    if not _is_operator(request):
        return json_error(
            403, "forbidden", "This endpoint is for operators only.", request_id_of(request)
        )
    dataplane.start()
    ok, report = services_report(holder.current)
    return JsonResponse(report, status=200 if ok else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics of this instance (every worker process). They name routes, services
    and upstream addresses, so only operators may read them."""
    if not _is_operator(request):
        return json_error(
            403, "forbidden", "This endpoint is for operators only.", request_id_of(request)
        )
    dataplane.start()
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
