"""A process's data plane, started and stopped in one place.

Four background threads keep a gateway process current: the configuration refresher
(routing.config.holder), the health monitor (routing.upstream.monitor), the traffic flusher
(here: it writes routing.observe.traffic_stats's counts to the cache) and the deny-set refresher
(here: it copies accounts.denylist's published set). The served stack starts
them in its ASGI lifespan (gateway_site.asgi) and shuts everything down there; under runserver
and the tests' client, the first view that needs them (the proxy view, /health, the admin, the
registry API) starts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.db import connections

from accounts.denylist import deny_set
from routing.config.holder import holder
from routing.observe import traffic_stats
from routing.periodic import PeriodicThread
from routing.proxy.cache_store import close_cache_clients
from routing.proxy.stages.limits import close_limit_clients
from routing.upstream.monitor import monitor
from routing.upstream.transport import close_clients

__all__ = ["close_database_connections", "shutdown", "start", "started", "stop"]

logger = logging.getLogger("portier.serve")


class TrafficFlusher(PeriodicThread):
    """Writes this process's traffic counts to the cache every PORTIER_HEALTH_SYNC_INTERVAL.

    A failed write keeps its counts for the next round (traffic_stats logs it once)."""

    name = "portier-traffic-flusher"

    def interval(self) -> float:
        return settings.PORTIER_HEALTH_SYNC_INTERVAL

    def tick(self) -> None:
        with contextlib.suppress(Exception):
            traffic_stats.flush()


traffic_flusher = TrafficFlusher()


class DenySetRefresher(PeriodicThread):
    """Copies the published deny-set (accounts.denylist) into this process, on the
    configuration's poll interval: deactivations and sign-outs reach every process within it."""

    name = "portier-deny-set"

    def interval(self) -> float:
        return settings.PORTIER_CONFIG_POLL_INTERVAL

    def starting(self) -> None:
        deny_set.load()

    def tick(self) -> None:
        deny_set.refresh()


deny_set_refresher = DenySetRefresher()


def start() -> None:
    """The refreshers, the monitor and the flusher, each started if it is not running.
    Blocking on a first start (it loads the snapshot)."""
    holder.start()
    monitor.start()
    traffic_flusher.start()
    deny_set_refresher.start()


async def started() -> None:
    """`start` for async views: free once running, else off the event loop."""
    if not (
        holder.running
        and monitor.running
        and traffic_flusher.running
        and deny_set_refresher.running
    ):
        await asyncio.to_thread(start)


def stop() -> None:
    """Stop the four threads (each join is bounded: a tick in practice, 5 s at most)."""
    holder.stop()
    monitor.stop()
    traffic_flusher.stop()
    deny_set_refresher.stop()


async def shutdown() -> None:
    """The process is ending, its requests drained: stop the threads, write what they would
    lose, and close every pool (upstreams, rate-limit Redis, the cache's Redis, the database),
    so the servers at the other end see connections closed rather than reset.

    Each step runs even if one before it failed: a pool left open is only a lost goodbye, but
    counts not written are lost for good. Bounded: thread joins, one flush, closes, and 2 s for
    the executor's threads to end."""
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("stop the background threads", lambda: asyncio.to_thread(stop)),
        # The flusher writes once per interval: the requests finished since its last round (the
        # ones just drained among them) would never be counted.
        ("write the traffic counts", lambda: asyncio.to_thread(traffic_stats.flush)),
        ("close the upstream pools", close_clients),
        ("close the rate-limit Redis clients", close_limit_clients),
        ("close the response cache's Redis clients", close_cache_clients),
        ("close the cache's Redis pools", lambda: asyncio.to_thread(_close_caches)),
        ("close the database connections", close_database_connections),
    ]
    for name, step in steps:
        try:
            await step()
        except Exception:
            logger.exception("shutdown: could not %s", name)


def _close_caches() -> None:
    """django-redis keeps its pools open (cache.close() leaves them unless CLOSE_CONNECTION is
    set). Its pools are per process, shared by every thread's cache object: they are closed
    where they are kept (routing.redis_topology); other caches close themselves."""
    from routing.redis_topology import close_cache_connections

    close_cache_connections()
    for alias in settings.CACHES:
        if not settings.CACHES[alias]["BACKEND"].startswith("django_redis."):
            caches[alias].close()


async def close_database_connections() -> None:
    """Django's database connections belong to the thread that opened them, and the ORM calls
    (audit rows, key lookups, publishing) ran on the default executor's threads, which no other
    thread can reach. So the executor is shut down: its threads end, and each thread's
    connections are closed as its thread-local storage goes (the driver closes on release).
    Bounded: a thread stuck in a query is left to end with the process. Then this thread's own."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(loop.shutdown_default_executor(), timeout=2.0)
    # This thread's own: only one actually opened needs closing (Django refuses close() on the
    # event loop's thread, opened or not, and the gateway never opens one here).
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None:
            connection.inc_thread_sharing()  # closed from a worker thread, as Django allows
            try:
                await asyncio.to_thread(connection.close)
            finally:
                connection.dec_thread_sharing()
