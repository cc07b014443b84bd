"""uvicorn's WebSocket protocol (websockets' sans-I/O implementation), closing with 1001 on a
graceful shutdown and bounding messages by PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES.

On SIGTERM uvicorn asks every connection to shut down before it waits for the in-flight tasks;
its WebSocket protocol then closes an open connection with 1012 ("service restart"). A gateway
going away says 1001 ("going away", RFC 6455 7.4.1), as NGINX and Envoy do: the client
reconnects, through the load balancer, to an instance that stays. The relay
(routing.proxy.websocket) sees the client side close with that code and closes its upstream
connection with it too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

__all__ = ["GOING_AWAY", "PortierWebSocketProtocol"]

GOING_AWAY = 1001


class PortierWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Read per connection, as gateway_site.protocol reads its limits.
        self.conn.max_message_size = settings.PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES

    def shutdown(self) -> None:
        if not self.handshake_complete or self.close_sent:
            super().shutdown()
            return
        # uvicorn's own shutdown, with 1001 for its 1012.
        self.stop_keepalive()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": GOING_AWAY})
        self.conn.send_close(GOING_AWAY, "server shutting down")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()
