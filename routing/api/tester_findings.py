"""The route tester's read-only findings (routing.api.tester): the stages that would change
something for a real request are asked what they would decide, and nothing is changed.

- tier: the limit stage's own tier and key, and the caller's count READ from the very key the
  stage increments (django-ratelimit's key in the rate-limit Redis), never incremented;
- cache: the response cache's bypass rule and key, without a lookup;
- CORS: the headers an actual answer would carry for the request's Origin;
- target: the balancer's `peek` (no lease, no in-flight count, no rotation step) and this
  process's view of each target's health.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from django_ratelimit.core import _get_window, _make_cache_key

from routing.proxy.context import Headers, RequestContext
from routing.proxy.cors import actual_headers
from routing.proxy.response_cache import base_key
from routing.proxy.stages.cache import _BYPASS, _cache_user, _has_credentials
from routing.proxy.stages.forward import _sticky_key
from routing.proxy.stages.limits import _key_value, _tier_for, limit_group
from routing.upstream import balancer, health

__all__ = [
    "REPORT_ONLY",
    "cache_verdict",
    "cors_verdict",
    "target_choice",
    "tier_count",
    "upstream_request",
]

# The decision shown for a policy or tier that would refuse but only reports it.
REPORT_ONLY = "would deny, report-only: not enforced"

logger = logging.getLogger("portier.tester")


def _text(headers: Headers) -> list[list[str]]:
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers]


def tier_count(ctx: RequestContext) -> dict[str, Any] | None:
    """The tier that would count this request, how many it has counted so far, and what it
    would decide: allowed, denied (429), or the report-only note when over the limit."""
    route = ctx.route
    assert route is not None
    spec = _tier_for(route, ctx)
    if spec is None:
        return None
    value = _key_value(spec, ctx)
    # The limit stage's group (routing.proxy.stages.limits.limit).
    group = limit_group(route, spec, ctx.method)
    window = _get_window(value, spec.period)
    found: dict[str, Any] = {
        "name": spec.name,
        "rate": spec.rate,
        "limit": spec.limit,
        "period": spec.period,
        "key": spec.key,
        "counted_as": value,
        "overridden": spec is not route.tier,
        "report_only": spec.report_only,
        "reset_seconds": max(0, window - int(time.time())),
    }
    try:
        count = _read_count(_make_cache_key(group, window, spec.rate, value, None))
    except Exception as exc:  # Redis down: the count is unknown, the rest still stands
        logger.info("route tester could not read a rate-limit count: %s", exc)
        return {**found, "count": None, "remaining": None, "error": "count unavailable"}
    decision = "allowed"
    if count >= spec.limit:  # this request would be one over
        decision = REPORT_ONLY if spec.report_only else "denied"
    return {
        **found,
        "count": count,
        "remaining": max(0, spec.limit - count),
        "decision": decision,
    }


def _read_count(key: str) -> int:
    """GET the key the limit stage INCRs. It lives in the cache's Redis (whatever its
    topology), or in the in-process cache without Redis, unless the rate limits count in a
    Redis of their own (PORTIER_RATELIMIT_REDIS_URL, one server): then it is read there."""
    url = settings.PORTIER_RATELIMIT_REDIS_URL
    if url and url != settings.REDIS_URL and settings.PORTIER_RATELIMIT_BACKEND == "async":
        timeout = settings.PORTIER_RATELIMIT_REDIS_TIMEOUT
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            raw = client.get(cache.make_key(key))
        finally:
            client.close()
        return int(raw or 0)
    return int(cache.get(key) or 0)


def upstream_request(ctx: RequestContext) -> dict[str, Any]:
    """What the transform stage made of the request for the upstream."""
    query = ctx.query_string if ctx.upstream_query is None else ctx.upstream_query
    return {
        "path": ctx.upstream_path,
        "query": query.decode("latin-1"),
        "headers": _text(ctx.upstream_headers),
    }


def cache_verdict(ctx: RequestContext) -> dict[str, Any]:
    """Whether the response cache would be consulted, and under which key."""
    route = ctx.route
    spec = route.cache if route is not None else None
    if spec is None:
        return {"enabled": False}
    user = _cache_user(spec, ctx)
    reason = ""
    if user is _BYPASS:
        reason = "the caller sends credentials and the route does not cache per user"
    elif ctx.method not in ("GET", "HEAD"):
        reason = f"{ctx.method} is never cached"
    elif ctx.header(b"range"):
        reason = "a Range request is never cached"
    if reason:
        return {"enabled": True, "result": "BYPASS", "reason": reason}
    assert user is None or isinstance(user, str)
    return {
        "enabled": True,
        "result": "LOOKUP",
        "key": base_key(spec, ctx, user),
        "per_user": user is not None,
        "private": _has_credentials(ctx),
    }


def cors_verdict(ctx: RequestContext) -> dict[str, Any] | None:
    """The CORS headers an actual (not preflight) answer would carry for the Origin sent."""
    route = ctx.route
    spec = route.edge.cors if route is not None else None
    origin = ctx.header(b"origin")
    if spec is None or origin is None:
        return None
    headers = actual_headers(spec, origin)
    allowed = any(name == b"access-control-allow-origin" for name, _ in headers)
    return {"origin": origin.decode("latin-1"), "allowed": allowed, "headers": _text(headers)}


def target_choice(ctx: RequestContext) -> dict[str, Any]:
    """The target the balancer would pick next, and every target's health as this process
    sees it (routing.upstream.health)."""
    route = ctx.route
    assert route is not None
    service = route.service
    picked = balancer.peek(service, _sticky_key(service, ctx))
    targets = []
    for each in health.service_targets(service):
        state = health.target_health(service, each)
        targets.append(
            {
                "url": each.key or each.url,
                "weight": each.weight,
                "instance_id": each.instance_id,
                "state": state.state,
                "circuit": state.circuit,
                "available": state.available,
                "picked": each is picked,
            }
        )
    return {
        "service": service.name,
        "balancing": service.balancing,
        "picked": (picked.key or picked.url) if picked is not None else None,
        "targets": targets,
    }
