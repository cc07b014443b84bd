"""ASGI entry point: Django for the gateway's own paths, the lean proxy entry for the rest.

Lifespan startup loads the configuration snapshot and starts its refresher and the health monitor
before the first request. Shutdown comes after the server has drained (or cut) the in-flight
requests (gateway_site.serve): it stops both threads, writes the traffic counts they would lose,
and closes every pool (upstreams, rate-limit Redis, the cache's Redis, the database), so the
servers at the other end see connections closed rather than reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.cache import caches
from django.db import connections
from django_redis import get_redis_connection

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_site.settings")
django_app = get_asgi_application()

from routing import traffic_stats  # noqa: E402  (after Django is set up)
from routing.asgi_entry import proxy_app  # noqa: E402
from routing.forward import close_clients  # noqa: E402
from routing.health import monitor as health_monitor  # noqa: E402
from routing.limits import close_limit_clients  # noqa: E402
from routing.paths import is_reserved_path  # noqa: E402
from routing.snapshot import holder  # noqa: E402

logger = logging.getLogger("portier.serve")


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "http":
        if is_reserved_path(scope["path"]):
            await django_app(scope, receive, send)
        else:
            await proxy_app(scope, receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)
    else:  # websockets are not proxied yet
        await send({"type": "websocket.close", "code": 1008})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                # The ORM and django-redis calls run here (sync_to_async, to_thread): named
                # threads, easy to tell apart in a thread dump or a py-spy profile.
                asyncio.get_running_loop().set_default_executor(
                    ThreadPoolExecutor(thread_name_prefix="portier-sync")
                )
                await asyncio.to_thread(holder.start)
                health_monitor.start()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            # Django's startup heap never dies: keep it out of every future full collection,
            # whose pauses otherwise set the proxy's tail latency (docs/design.md, bench).
            gc.collect()
            gc.freeze()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await _shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _shutdown() -> None:
    """Each step runs even if one before it failed: a pool left open is only a lost goodbye, but
    counts not written are lost for good. Bounded: thread joins (5 s at most each, a tick in
    practice), one flush, closes, and 2 s for the executor's threads to end."""
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("stop the refresher and the health monitor", lambda: asyncio.to_thread(_stop_threads)),
        # The monitor flushes once per PORTIER_HEALTH_SYNC_INTERVAL: the requests finished since
        # its last tick (the ones just drained among them) would never be counted.
        ("write the traffic counts", lambda: asyncio.to_thread(traffic_stats.flush)),
        ("close the upstream pools", close_clients),
        ("close the rate-limit Redis clients", close_limit_clients),
        ("close the cache's Redis pools", lambda: asyncio.to_thread(_close_caches)),
        ("close the database connections", _close_database_connections),
    ]
    for name, step in steps:
        try:
            await step()
        except Exception:
            logger.exception("shutdown: could not %s", name)


def _stop_threads() -> None:
    holder.stop()
    health_monitor.stop()


def _close_caches() -> None:
    """django-redis keeps its pools open (cache.close() leaves them unless CLOSE_CONNECTION is
    set). Its pools are per process, shared by every thread's cache object: disconnect them
    through the raw client."""
    for alias in settings.CACHES:
        try:
            redis = get_redis_connection(alias)
        except NotImplementedError:  # not django-redis (the in-process cache)
            caches[alias].close()
        else:
            redis.connection_pool.disconnect()


async def _close_database_connections() -> None:
    """Django's database connections belong to the thread that opened them, and the ORM calls
    (audit rows, key lookups, publishing) ran on the default executor's threads, which no other
    thread can reach. So the executor is shut down: its threads end, and each thread's
    connections are closed as its thread-local storage goes (the driver closes on release).
    Bounded: a thread stuck in a query is left to end with the process. Then this thread's own."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(loop.shutdown_default_executor(), timeout=2.0)
    connections.close_all()
