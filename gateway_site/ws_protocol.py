"""uvicorn's WebSocket protocol (websockets' sans-I/O implementation), closing with 1001 on a
graceful shutdown and bounding messages by PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES.

On SIGTERM uvicorn asks every connection to shut down before it waits for the in-flight tasks;
its WebSocket protocol then closes an open connection with 1012 ("service restart"). A gateway
going away says 1001 ("going away", RFC 6455 7.4.1), as NGINX and Envoy do: the client
reconnects, through the load balancer, to an instance that stays. The relay
(routing.proxy.websocket) sees the client side close with that code and closes its upstream
connection with it too. uvicorn's handshake log lines have their query redacted (a browser's
token may be in it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.conf import settings
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.protocol import State

from routing.observe.redaction import redact_query

__all__ = ["GOING_AWAY", "PortierWebSocketProtocol"]

GOING_AWAY = 1001


class _RedactedHandshakeLines(logging.Filter):
    """uvicorn logs each handshake (`<client> - "WebSocket <path?query>" <status>`) at INFO on
    uvicorn.error, query included: a browser's ?access_token= would be written in clear. The
    query is logged as the access log writes it, secret-looking values replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            isinstance(record.msg, str)
            and '"WebSocket %s"' in record.msg
            and isinstance(args, tuple)
            and len(args) >= 2
            and isinstance(args[1], str)
            and "?" in args[1]
        ):
            path, _, query = args[1].partition("?")
            redacted = redact_query(query.encode("latin-1", "replace"))
            record.args = (args[0], f"{path}?{redacted}", *args[2:])
        return True


logging.getLogger("uvicorn.error").addFilter(_RedactedHandshakeLines())


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
        if self.conn.state is not State.OPEN:
            # The client's close frame came first: no close can be sent now, and raising here
            # would stop uvicorn telling the other connections to shut down.
            self.transport.close()
            return
        # uvicorn's own shutdown, with 1001 for its 1012.
        self.stop_keepalive()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": GOING_AWAY})
        self.conn.send_close(GOING_AWAY, "server shutting down")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()
