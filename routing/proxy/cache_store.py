"""Where cached answers live: the project's cache, awaited without a thread hop.

With Redis (REDIS_URL), one redis.asyncio client per event loop talks to the same Redis as
django-redis, under the keys `cache.make_key` gives (the project's key prefix), so a purge's
`delete_pattern` finds them. Without Redis (the embedded default) it is the in-process cache,
called inline: there is no I/O to wait for.

A Redis that fails is skipped for a few seconds: the cache then answers "nothing stored" and the
request goes to the upstream, never to an error (a cache is an optimisation).
"""

from __future__ import annotations

import asyncio
import logging
import time

from routing.hot_settings import default_cache, hot_settings
from routing.proxy.turn_pipeline import TurnPipeline
from routing.redis_topology import async_redis_client, close_async_client

__all__ = [
    "close_cache_clients",
    "store_add",
    "store_get",
    "store_release",
    "store_set",
]

logger = logging.getLogger("portier.cache")

_RETRY_AFTER_FAILURE = 2.0
_clients: dict[asyncio.AbstractEventLoop, TurnPipeline] = {}
_down_until = 0.0


def _client() -> TurnPipeline | None:
    """This loop's Redis client, wrapped so that the lookups of one loop turn share a round trip
    (every request of a caching route makes one)."""
    global _down_until
    if not hot_settings.REDIS_URL or time.monotonic() < _down_until:
        return None
    loop = asyncio.get_running_loop()
    pipeline = _clients.get(loop)
    if pipeline is None:
        timeout = hot_settings.PORTIER_CACHE_REDIS_TIMEOUT
        client = async_redis_client(hot_settings.REDIS_URL, timeout=timeout)
        pipeline = _clients[loop] = TurnPipeline(client)
    return pipeline


def _redis_key(key: str) -> str:
    return default_cache().make_key(key)


def _failed(exc: Exception) -> None:
    global _down_until
    if time.monotonic() >= _down_until:
        logger.warning("response cache cannot reach Redis (%r): answers go to the upstream", exc)
    _down_until = time.monotonic() + _RETRY_AFTER_FAILURE


async def store_get(key: str) -> bytes | None:
    client = _client()
    if client is None:
        return None if hot_settings.REDIS_URL else default_cache().get(key)
    try:
        return await client.call("GET", _redis_key(key))
    except Exception as exc:
        _failed(exc)
        return None


async def store_set(key: str, value: bytes, seconds: int) -> None:
    client = _client()
    if client is None:
        if not hot_settings.REDIS_URL:
            default_cache().set(key, value, seconds)
        return
    try:
        await client.client.set(_redis_key(key), value, ex=max(1, seconds))
    except Exception as exc:
        _failed(exc)


async def store_add(key: str, value: bytes, milliseconds: int) -> bool:
    """Set only if absent (a short lock): True when this caller set it."""
    client = _client()
    if client is None:
        if hot_settings.REDIS_URL:
            return True  # Redis is down: no lock to share, the caller goes on alone
        return bool(default_cache().add(key, value, max(1, milliseconds // 1000)))
    try:
        return bool(await client.client.set(_redis_key(key), value, px=milliseconds, nx=True))
    except Exception as exc:
        _failed(exc)
        return True


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


async def store_release(key: str, token: bytes) -> None:
    """Delete a lock only while it still holds this token: a lock that expired and was taken
    by another request is that request's to release."""
    client = _client()
    if client is None:
        if not hot_settings.REDIS_URL and default_cache().get(key) == token:
            default_cache().delete(key)
        return
    try:
        await client.client.eval(_RELEASE, 1, _redis_key(key), token)
    except Exception as exc:
        _failed(exc)


async def close_cache_clients() -> None:
    pipeline = _clients.pop(asyncio.get_running_loop(), None)
    if pipeline is not None:
        await close_async_client(pipeline.client)
