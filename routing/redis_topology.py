"""Redis clients for the topology the settings name: one server, Sentinel, or Cluster.

Every Redis user in the gateway gets its client here, so each one follows a failover or a
cluster's slots without knowing which it talks to:
- Django's cache (configuration, keys, health board, registry, traffic counts) is django-redis,
  configured by the settings; for a Cluster, with `ClusterCacheClient` below.
- The rate limits' and the response cache's own `redis.asyncio` clients (`async_redis_client`).

The topology applies to REDIS_URL. Another URL (a PORTIER_RATELIMIT_REDIS_URL of its own) names
one server.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from django_redis.client import DefaultClient
from django_redis.client.default import _main_exceptions
from django_redis.exceptions import ConnectionInterrupted
from django_redis.pool import ConnectionFactory
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.retry import Retry

__all__ = [
    "ClusterCacheClient",
    "ClusterConnectionFactory",
    "async_redis_client",
    "close_async_client",
    "close_cache_connections",
    "topology_of",
]

# A Cluster client retries a failed call three times by default, rebuilding its map of the
# slots and backing off in between: 2-6 s per call with one master down, whatever the socket
# timeouts. The gateway's callers skip Redis for a while after a failure instead, so a call
# must fail within its timeout: no retry (a MOVED or ASK redirect is followed all the same).
_NO_RETRY = Retry(NoBackoff(), 0)


def topology_of(url: str) -> str:
    """ "cluster", "sentinel" or "single" for this URL."""
    if url != settings.REDIS_URL:
        return "single"
    return settings.PORTIER_REDIS_TOPOLOGY


def async_redis_client(url: str, *, timeout: float) -> Any:
    """A redis.asyncio client for `url` that gives up after `timeout` seconds (and does not
    retry a timeout: the callers skip Redis for a while instead)."""
    timeouts = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    topology = topology_of(url)
    if topology == "cluster":
        return AsyncRedisCluster.from_url(url, retry=AsyncRetry(NoBackoff(), 0), **timeouts)
    if topology == "sentinel":
        master, kwargs = _sentinel_master(url)
        sentinel = AsyncSentinel(
            settings.PORTIER_REDIS_SENTINELS, sentinel_kwargs=_sentinel_kwargs(timeout)
        )
        return sentinel.master_for(master, retry_on_timeout=False, **timeouts, **kwargs)
    return aioredis.Redis.from_url(url, retry_on_timeout=False, **timeouts)


async def close_async_client(client: Any) -> None:
    """Close an async client's connections, and a Sentinel client's to the sentinels too."""
    await client.aclose()
    pool = getattr(client, "connection_pool", None)  # a Cluster client has one per node
    manager = getattr(pool, "sentinel_manager", None)
    for sentinel in manager.sentinels if manager is not None else ():
        await sentinel.aclose()


def close_cache_connections() -> None:
    """Close the connections django-redis keeps open for Django's cache (cache.close() leaves
    them): its pools, a Cluster client's pools per node, a Sentinel pool's sentinels. It opens
    nothing: a Cluster client that was never made is not made now."""
    for client in ClusterConnectionFactory._clusters.values():
        client.disconnect_connection_pools()
    for pool in ConnectionFactory._pools.values():
        pool.disconnect()
        manager = getattr(pool, "sentinel_manager", None)
        for sentinel in manager.sentinels if manager is not None else ():
            sentinel.close()


def _sentinel_master(url: str) -> tuple[str, dict[str, Any]]:
    """The master's name (the URL's host, django-redis's form `redis://mymaster/0`) and what the
    URL says of the connection to it: database and credentials."""
    parsed = parse_url(url)
    master = parsed.pop("host")
    parsed.pop("port", None)
    return master, parsed


def _sentinel_kwargs(timeout: float) -> dict[str, Any]:
    """How to talk to the sentinels themselves (their own password, if they have one)."""
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if settings.PORTIER_REDIS_SENTINEL_PASSWORD:
        kwargs["password"] = settings.PORTIER_REDIS_SENTINEL_PASSWORD
    return kwargs


class ClusterConnectionFactory(ConnectionFactory):
    """django-redis's factory for a Redis Cluster: RedisCluster keeps a pool per node itself,
    so the factory keeps one client per URL per process instead of a pool."""

    _clusters: dict[str, RedisCluster] = {}

    def connect(self, url: str) -> RedisCluster:
        client = self._clusters.get(url)
        if client is None:
            params = self.make_connection_params(url)
            params.pop("parser_class", None)
            client = self._clusters[url] = RedisCluster.from_url(**params, retry=_NO_RETRY)
        return client

    def disconnect(self, connection: Any) -> None:
        connection.disconnect_connection_pools()


class ClusterCacheClient(DefaultClient):
    """django-redis's client on a Redis Cluster. A cluster refuses a multi-key command whose
    keys live in different hash slots; DEL and SCAN already go node by node in redis-py's
    RedisCluster, and this reads many keys the same way. (`keys()` asks one node only: the
    gateway lists keys with `iter_keys` and `delete_pattern`, which scan every node.)"""

    def get_many(self, keys: Any, version: int | None = None, client: Any = None) -> dict:
        if not keys:
            return {}
        if client is None:
            client = self.get_client(write=False)
        by_key = {self.make_key(k, version=version): k for k in keys}
        try:
            values = client.mget_nonatomic(list(by_key))
        except _main_exceptions as exc:
            raise ConnectionInterrupted(connection=client) from exc
        return {
            by_key[key]: self.decode(value)
            for key, value in zip(by_key, values, strict=True)
            if value is not None
        }
