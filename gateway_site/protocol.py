"""uvicorn's httptools protocol with deadlines for receiving a request, so slow clients cannot
hold a connection forever.

Bare uvicorn waits for a request as long as bytes keep coming: its keep-alive timeout only covers
the idle time between requests and any byte cancels it. A client that trickles its head or its
body one byte at a time would hold a connection, its memory and a slot upstream indefinitely.
Like Apache's mod_reqtimeout, this protocol bounds both phases of receiving a request:

- head: the request line and headers must arrive within PORTIER_CLIENT_HEADER_TIMEOUT seconds,
  counted from the connection's opening for the first request and from the first byte of each
  later one (the wait before it stays uvicorn's keep-alive timeout). Expired: 408, then close.
- body: within PORTIER_CLIENT_BODY_TIMEOUT seconds of the end of the head, plus one second per
  PORTIER_CLIENT_BODY_MIN_RATE bytes received, so a slow but steady upload passes and a trickle
  does not. Expired: 408 if no answer has started, then close; the application sees
  http.disconnect at once, so the proxy stops and releases its upstream connection.

Time the server itself is not reading (uvicorn's back-pressure while the application or upstream
is slow, or a request waiting for `100 Continue`) never counts against the client.

Cost: one timer per connection, re-armed lazily. A request only stores a deadline when a phase
starts (one loop.time()) and each body chunk adds to it; when the timer fires it compares the
deadline with the clock and, if the client is still in time, sleeps again until the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
from asyncio import TimerHandle
from typing import Any

from django.conf import settings
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from routing.proxy.errors import error_body

__all__ = ["PortierHttpProtocol"]

logger = logging.getLogger("portier.serve")

# What the connection waits for from the client. Plain ints: compared on every request.
_NOTHING = 0  # the request is in (being answered), or the connection is idle between requests
_HEAD = 1
_BODY = 2
# Seconds a connection with no request yet may wait for one once the server shuts down.
SHUTDOWN_GRACE = 1.0


class PortierHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus the head and body deadlines (module docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Read per connection, not at import: a changed setting (or a test's override) applies
        # to the next connection.
        self.header_timeout: float = settings.PORTIER_CLIENT_HEADER_TIMEOUT
        self.body_timeout: float = settings.PORTIER_CLIENT_BODY_TIMEOUT
        self.seconds_per_byte: float = 1.0 / settings.PORTIER_CLIENT_BODY_MIN_RATE
        self.awaiting = _NOTHING
        # On the client's clock (_PausingFlow): loop time minus the time reading was paused.
        self.deadline = 0.0
        self.timer: TimerHandle | None = None
        self.timer_due = 0.0  # loop time the timer fires at
        self.pausing: _PausingFlow  # self.flow, with its pauses counted (connection_made)
        self.closing = False  # the server is shutting down: answer what is coming, then close

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = self.pausing = _PausingFlow(transport, self.loop)
        self._expect(_HEAD, self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """Graceful shutdown (SIGTERM, or a worker recycled after max_requests). uvicorn closes
        every connection with no request under way, so a request whose connection was accepted
        a moment before (its bytes not yet read) was cut unanswered. A connection waiting for a
        request head gets SHUTDOWN_GRACE seconds for it instead, and is closed after its answer."""
        if self.awaiting != _HEAD or self.transport.is_closing():
            super().shutdown()
            return
        self.closing = True
        self.loop.call_later(SHUTDOWN_GRACE, self._close_if_no_request)

    def _close_if_no_request(self) -> None:
        if self.awaiting == _HEAD and not self.transport.is_closing():
            self.transport.close()

    def handle_websocket_upgrade(self) -> None:
        # The transport passes to the websocket protocol: this one's clock must not close it.
        self._stop_clock()
        super().handle_websocket_upgrade()

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.awaiting != _HEAD:  # the first request's clock started with the connection
            self._expect(_HEAD, self.header_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.closing and self.cycle is not None:
            self.cycle.keep_alive = False
        # A request without a body completes in this same feed_data: its body deadline is set
        # and never looked at (the timer already armed for the head serves both).
        self._expect(_BODY, self.body_timeout)

    def on_body(self, body: bytes) -> None:
        self.deadline += len(body) * self.seconds_per_byte
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.awaiting = _NOTHING
        super().on_message_complete()

    # The clock

    def _expect(self, awaiting: int, timeout: float) -> None:
        self.awaiting = awaiting
        now = self.loop.time()
        self.deadline = now - self.pausing.paused_seconds + timeout
        due = now + timeout
        # A timer already due sooner is kept: it re-arms itself for the later deadline.
        if self.timer is None or self.timer_due > due:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(due, self._check)
        self.timer_due = due

    def _stop_clock(self) -> None:
        self.awaiting = _NOTHING
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check(self) -> None:
        self.timer = None
        awaiting = self.awaiting
        if awaiting == _NOTHING or self.transport.is_closing():
            return  # the next request's first byte starts a new clock; or it is over anyway
        now = self.loop.time()
        flow = self.pausing
        cycle = self.cycle
        if flow.read_paused or (
            awaiting == _BODY and cycle is not None and cycle.waiting_for_100_continue
        ):
            # The server is not reading, or has not yet asked for the body: the client cannot
            # send. A fresh allowance from now on is approximate, and always in its favour.
            timeout = self.body_timeout if awaiting == _BODY else self.header_timeout
            self.deadline = max(self.deadline, now - flow.paused_seconds + timeout)
            self._arm(now + timeout)
            return
        late = now - flow.paused_seconds - self.deadline
        if late < 0:
            self._arm(now - late)
            return
        self._expire(awaiting)

    def _expire(self, awaiting: int) -> None:
        self.awaiting = _NOTHING
        cycle = self.cycle  # the request being received, or (head) the one before it
        if awaiting == _HEAD:
            can_answer = cycle is None or cycle.response_complete
        else:
            can_answer = cycle is not None and not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            # The application must see http.disconnect now, not when the loop reports the closed
            # connection: an answer it wrote meanwhile would follow the 408 onto the socket.
            cycle.disconnected = True
            cycle.message_event.set()
        request_id = os.urandom(16).hex()  # as routing.proxy.pipeline makes them
        part = "head" if awaiting == _HEAD else "body"
        if can_answer:
            self.transport.write(self._timeout_answer(part, request_id))
        self.transport.close()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
        logger.warning(
            "client %s too slow sending the request %s: %s",
            client,
            part,
            "answered 408 and closed" if can_answer else "closed",
            extra={"request_id": request_id},
        )

    def _timeout_answer(self, part: str, request_id: str) -> bytes:
        body = error_body(
            "request_timeout", f"The request {part} was not received in time.", request_id
        )
        lines = [STATUS_LINE[408]]
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-request-id", request_id.encode()),
            (b"connection", b"close"),
        ]
        for name, value in headers:
            lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"\r\n")
        lines.append(body)
        return b"".join(lines)


class _PausingFlow(FlowControl):
    """uvicorn's flow control, also adding up the seconds reading was paused: the client cannot
    send then, so the deadlines run on the client's clock, loop time minus those seconds.

    It holds the loop, not the protocol: no reference cycle to outlive the connection."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(transport)
        self.loop = loop
        self.paused_seconds = 0.0
        self.paused_at = 0.0

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.paused_at = self.loop.time()
            super().pause_reading()

    def resume_reading(self) -> None:
        # Called on every receive(): nothing but this test when reading is not paused.
        if self.read_paused:
            self.paused_seconds += self.loop.time() - self.paused_at
            super().resume_reading()
