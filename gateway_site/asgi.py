"""ASGI entry point: Django for the gateway's own paths, the lean proxy entry for the rest.

Lifespan startup loads the configuration snapshot and starts its refresher and the health monitor
before the first request; shutdown closes the upstream connection pool and stops both.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_site.settings")
django_app = get_asgi_application()

from routing.asgi_entry import proxy_app  # noqa: E402  (after Django is set up)
from routing.forward import close_clients  # noqa: E402
from routing.health import monitor as health_monitor  # noqa: E402
from routing.limits import close_limit_clients  # noqa: E402
from routing.paths import is_reserved_path  # noqa: E402
from routing.snapshot import holder  # noqa: E402


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
            await close_clients()
            await close_limit_clients()
            holder.stop()
            health_monitor.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
