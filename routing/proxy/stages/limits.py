"""Limit: the route's rate-limit tier, counted in Redis so every instance shares it.

Windows, keys and rates are django-ratelimit's own (its window function, cache-key function and
rate grammar), so the two I/O paths below count the very same Redis keys:

- async (default): one Lua script (INCR, and EXPIRE on a window's first hit) on redis.asyncio,
  awaited on the event loop, the scripts of one loop turn sent in one pipeline;
- thread: django-ratelimit's `get_usage` through django-redis, in a worker thread;
- without Redis: `get_usage` on the in-process cache, inline (no I/O to wait for).

bench/ measures async against thread. When Redis cannot count, PORTIER_RATELIMIT_FAIL decides:
open (default: serve, log) or closed (503). After a failure Redis is skipped for
PORTIER_RATELIMIT_RETRY_AFTER_FAILURE seconds, so a dead Redis costs no request a timeout.

A tier in report-only mode is counted the same way, but a request over its limit is served and
`ctx.would_deny` says "limit" (a policy's "policy", set earlier, is kept). Such a tier sends no
RateLimit-* or Retry-After headers at all: a client must not see, and start pacing itself by, a
limit that is not enforced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from asgiref.sync import sync_to_async
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_ratelimit.core import EXPIRATION_FUDGE, _get_window, _make_cache_key, get_usage

from routing.config.spec import RouteSpec, TierSpec
from routing.hot_settings import default_cache, hot_settings
from routing.proxy.context import GatewayError, RequestContext
from routing.proxy.turn_pipeline import TurnPipeline
from routing.redis_topology import async_redis_client, close_async_client

__all__ = ["close_limit_clients", "limit", "limit_group"]

logger = logging.getLogger("portier.limits")


@dataclass(frozen=True, slots=True)
class _Count:
    count: int
    window_end: int


class _RedisDown(Exception):
    pass


_pipelines: dict[tuple[asyncio.AbstractEventLoop, str], TurnPipeline] = {}
_down_until = 0.0
_failing = False  # the last attempt failed (logged once until Redis counts again)


async def limit(ctx: RequestContext) -> None:
    route = ctx.route
    assert route is not None
    tier = _tier_for(route, ctx)
    if tier is None:
        return
    value = _key_value(tier, ctx)
    group = limit_group(route, tier, ctx.method)
    try:
        counted = await _count(group, value, tier)
    except _RedisDown:
        # A report-only tier refuses nothing, not even when it cannot count.
        if hot_settings.PORTIER_RATELIMIT_FAIL == "closed" and not tier.report_only:
            raise GatewayError(
                503,
                "rate_limit_unavailable",
                "Rate limiting is unavailable; try again soon.",
                [(b"retry-after", b"1")],
            ) from None
        return  # fail open: served without a count (logged when Redis went down)
    ctx.tier_name = tier.name
    if tier.report_only:
        if counted.count > tier.limit and not ctx.would_deny:
            ctx.would_deny = "limit"
        return
    reset = max(0, counted.window_end - int(time.time()))
    remaining = max(0, tier.limit - counted.count)
    headers = [
        (b"ratelimit-limit", str(tier.limit).encode()),
        (b"ratelimit-remaining", str(remaining).encode()),
        (b"ratelimit-reset", str(reset).encode()),
        (b"ratelimit-policy", f"{tier.limit};w={tier.period}".encode()),
    ]
    if counted.count > tier.limit:
        raise GatewayError(
            429,
            "rate_limited",
            "Too many requests.",
            [*headers, (b"retry-after", str(max(1, reset)).encode())],
        )
    ctx.response_headers.extend(headers)


def limit_group(route: RouteSpec, tier: TierSpec, method: str) -> str:
    """The django-ratelimit group a request is counted in (the route tester reads it too)."""
    return f"portier:{route.id}:{tier.name}" + (f":{method}" if tier.per_method else "")


def _tier_for(route: RouteSpec, ctx: RequestContext) -> TierSpec | None:
    """The route's tier, or the most generous override among the caller's roles."""
    if route.tier_overrides and ctx.identity is not None:
        roles = ctx.identity.roles
        overrides = [tier for role, tier in route.tier_overrides if role in roles]
        if overrides:
            return max(overrides, key=lambda t: t.limit / t.period)
    return route.tier


def _key_value(tier: TierSpec, ctx: RequestContext) -> str:
    identity = ctx.identity
    if tier.key == "route":
        return "route"
    if tier.key == "user" and identity is not None:
        return f"user:{identity.subject}"
    if tier.key == "api_key" and identity is not None:
        return f"key:{identity.key_prefix}" if identity.key_prefix else f"user:{identity.subject}"
    if tier.key == "header":
        value = ctx.header(tier.header_name.lower().encode("latin-1"))
        if value is not None:
            return "header:" + value.decode("latin-1")[:256]
    # ip, and every key whose subject is missing (anonymous caller, absent header).
    return f"ip:{ctx.client_ip}"


async def _count(group: str, value: str, tier: TierSpec) -> _Count:
    url = hot_settings.PORTIER_RATELIMIT_REDIS_URL
    if not url:
        return _count_with_django_ratelimit(group, value, tier)
    global _down_until, _failing
    if time.monotonic() < _down_until:
        raise _RedisDown
    try:
        if hot_settings.PORTIER_RATELIMIT_BACKEND == "thread":
            counted = await sync_to_async(_count_with_django_ratelimit, thread_sensitive=False)(
                group, value, tier
            )
        else:
            counted = await _count_async(url, group, value, tier)
    except Exception as exc:  # connection refused, timeout, protocol error...
        _down_until = time.monotonic() + hot_settings.PORTIER_RATELIMIT_RETRY_AFTER_FAILURE
        if not _failing:  # once per outage, not once per retry
            logger.warning(
                "rate limiting cannot reach Redis (%s); failing %s, retrying every %.1fs",
                type(exc).__name__,
                hot_settings.PORTIER_RATELIMIT_FAIL,
                hot_settings.PORTIER_RATELIMIT_RETRY_AFTER_FAILURE,
            )
        _failing = True
        raise _RedisDown from None
    if _failing:
        _failing = False
        logger.warning("rate limiting reaches Redis again: counting")
    return counted


# One atomic command per request: count, and start the window's expiry on its first request
# (the same expiry django-ratelimit gives the keys it creates). bench/ measured it against
# MULTI/INCR/EXPIRE/EXEC: one reply to parse instead of four. The requests of one turn of the
# event loop send theirs together (routing.proxy.turn_pipeline).
_INCR_WITH_EXPIRY = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


async def _count_async(url: str, group: str, value: str, tier: TierSpec) -> _Count:
    window = _get_window(value, tier.period)
    key = _redis_key(group, window, tier.rate, value)
    expiry = tier.period + EXPIRATION_FUDGE
    count = await _pipeline(url).call("EVAL", _INCR_WITH_EXPIRY, 1, key, expiry)
    return _Count(int(count), window)


# A caller's key is the same for every request of a window: remembered, not rebuilt. Building
# it reads five settings and hashes: with Django's cache fetched per request's task (now
# routing.hot_settings.default_cache), ~8 % of the event loop on the full pipeline (bench
# --profile). 4,096 keys take 1-3 MiB.
_KEYS_REMEMBERED = 4096
_KEY_SETTINGS = frozenset({"CACHES", "RATELIMIT_CACHE_PREFIX", "RATELIMIT_HASH_ALGORITHM"})


@lru_cache(maxsize=_KEYS_REMEMBERED)
def _redis_key(group: str, window: int, rate: str, value: str) -> str:
    """The Redis key django-ratelimit counts this caller's window under."""
    return default_cache().make_key(_make_cache_key(group, window, rate, value, None))


@receiver(setting_changed)
def _key_setting_changed(*, setting: str, **_: Any) -> None:
    # Settings change only in tests (override_settings); a new prefix must count new keys.
    if setting in _KEY_SETTINGS:
        _redis_key.cache_clear()


def _pipeline(url: str) -> TurnPipeline:
    loop = asyncio.get_running_loop()
    pipeline = _pipelines.get((loop, url))
    if pipeline is None:
        client = async_redis_client(url, timeout=hot_settings.PORTIER_RATELIMIT_REDIS_TIMEOUT)
        pipeline = _pipelines[(loop, url)] = TurnPipeline(client)
    return pipeline


class _Request:
    """The little of a request django-ratelimit's get_usage reads (the key is given as a value)."""

    method = "GET"


def _count_with_django_ratelimit(group: str, value: str, tier: TierSpec) -> _Count:
    usage: dict[str, Any] | None = get_usage(
        _Request(),
        group=group,
        key=lambda _group, _request: value,
        rate=tier.rate,
        increment=True,
    )
    if usage is None or usage["time_left"] < 0:  # django-ratelimit's "cache failed" answer
        raise _RedisDown("django-ratelimit could not count")
    return _Count(int(usage["count"]), int(time.time()) + int(usage["time_left"]))


async def close_limit_clients() -> None:
    loop = asyncio.get_running_loop()
    for key in [k for k in _pipelines if k[0] is loop]:
        await close_async_client(_pipelines.pop(key).client)
