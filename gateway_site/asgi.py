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
import itertools
import logging
import os
import threading
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

# Numbers each lifespan's default executor: its threads' names tell shutdown which are its own.
_executors = itertools.count(1)


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
    sync_threads = f"portier-sync-{next(_executors)}"
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                # The ORM and django-redis calls run here (sync_to_async, to_thread): named
                # threads, so that shutdown can find them.
                asyncio.get_running_loop().set_default_executor(
                    ThreadPoolExecutor(thread_name_prefix=sync_threads)
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
            await _shutdown(sync_threads)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _shutdown(sync_threads: str) -> None:
    """Each step runs even if one before it failed: a pool left open is only a lost goodbye, but
    counts not written are lost for good. Bounded: thread joins (5 s at most each, a tick in
    practice), one flush, closes, and a barrier of 1 s."""
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("stop the refresher and the health monitor", lambda: asyncio.to_thread(_stop_threads)),
        # The monitor flushes once per PORTIER_HEALTH_SYNC_INTERVAL: the requests finished since
        # its last tick (the ones just drained among them) would never be counted.
        ("write the traffic counts", lambda: asyncio.to_thread(traffic_stats.flush)),
        ("close the upstream pools", close_clients),
        ("close the rate-limit Redis clients", close_limit_clients),
        ("close the cache's Redis pools", lambda: asyncio.to_thread(_close_caches)),
        ("close the database connections", lambda: _close_database_connections(sync_threads)),
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


async def _close_database_connections(sync_threads: str) -> None:
    """Django's database connections belong to the thread that opened them, and the ORM calls
    (audit rows, key lookups, publishing) ran on the default executor: run close_all() on each
    of its threads. Each call waits at a barrier until all have started, so no thread takes two;
    a thread still busy (a cut request's query) makes the barrier give up after a second, and its
    connection ends with the process. `sync_threads`: the executor's thread name prefix."""
    threads = [t for t in threading.enumerate() if t.name.startswith(sync_threads + "_")]
    if not threads:
        return
    barrier = threading.Barrier(len(threads))

    def close() -> None:
        connections.close_all()
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=1.0)

    loop = asyncio.get_running_loop()
    await asyncio.wait([loop.run_in_executor(None, close) for _ in threads], timeout=2.0)
