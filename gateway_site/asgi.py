"""ASGI entry point: Django for the gateway's own paths, the lean proxy entry for the rest, and
the WebSocket relay (routing.proxy.websocket) for upgrades on proxied paths.

Lifespan startup starts the process's data plane (routing.dataplane: the configuration snapshot
and its refresher, the health monitor, the traffic flusher) before the first request. Shutdown
comes after the server has drained (or cut) the in-flight requests (gateway_site.serve):
routing.dataplane stops the threads, writes what they would lose, and closes every pool.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.core.asgi import get_asgi_application

from gateway_site import admin_loading

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_site.settings")
admin_loading.load_on_demand()
django_app = get_asgi_application()

from gateway_site.urls import LAZY_URLCONFS  # noqa: E402  (after Django is set up)
from routing import dataplane  # noqa: E402
from routing.proxy.asgi_entry import proxy_app  # noqa: E402
from routing.proxy.paths import is_reserved_path  # noqa: E402
from routing.proxy.websocket import websocket_app  # noqa: E402

logger = logging.getLogger("portier.serve")

# New container objects (allocations less deallocations) between two young collections.
YOUNG_COLLECTION_EVERY = 10_000

_imported_urlconfs: set[str] = set()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "http":
        if is_reserved_path(scope["path"]):
            await _import_urlconf(scope["path"])
            await django_app(scope, receive, send)
        else:
            await proxy_app(scope, receive, send)
    elif kind == "websocket":
        if is_reserved_path(scope["path"]):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})  # no WebSocket of its own
        else:
            await websocket_app(scope, receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)


async def _import_urlconf(path: str) -> None:
    """Import the lazily mounted URLs under `path` (the admin, DRF: gateway_site.urls) off the loop.

    Django would import them inside URL resolution, on the event loop: ~0.4 s during which no
    proxied request moves. In a thread, the loop keeps running while the modules load.
    """
    for prefix, module in LAZY_URLCONFS.items():
        if path.startswith(prefix) and module not in _imported_urlconfs:
            await asyncio.to_thread(importlib.import_module, module)
            _imported_urlconfs.add(module)


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
                await asyncio.to_thread(dataplane.start)
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            # Django's startup heap never dies: keep it out of every future full collection,
            # whose pauses otherwise set the proxy's tail latency (docs/design.md, bench).
            gc.collect()
            gc.freeze()
            # A request keeps ~100 container objects alive while it waits on the upstream, so at
            # 50 in flight Python's default (a young collection per 700 new objects) collected
            # every ~10 requests and mostly found live requests: ~40 µs of CPU per request
            # (bench). Fewer, larger young collections cost less than a third of it.
            gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await dataplane.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
