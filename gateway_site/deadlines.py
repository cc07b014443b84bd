"""The deadlines for receiving a request (the module docstring of gateway_site.protocol says
why): one timer per connection, re-armed lazily, on the client's clock (loop time minus the
seconds the server was not reading). PortierHttpProtocol mixes this in; the framing rules and
refusals stay there."""

from __future__ import annotations

import asyncio
import logging
import os
from asyncio import TimerHandle
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl

__all__ = ["BODY", "HEAD", "NOTHING", "ClientDeadlines", "PausingFlow"]

logger = logging.getLogger("portier.serve")

# What the connection waits for from the client. Plain ints: compared on every request.
NOTHING = 0  # the request is in (being answered), or the connection is idle between requests
HEAD = 1
BODY = 2


class ClientDeadlines:
    """The clock of one connection: `_expect` starts a phase (head or body) with its allowance,
    `_check` runs when the timer fires, `_expire` answers 408 (when it still can) and closes."""

    # Set by the protocol (gateway_site.protocol.PortierHttpProtocol).
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    client: Any
    pausing: PausingFlow
    awaiting: int
    deadline: float
    timer: TimerHandle | None
    timer_due: float
    header_timeout: float
    body_timeout: float

    def _answer(self, status: int, code: str, message: str, request_id: str) -> bytes:
        raise NotImplementedError

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
        self.awaiting = NOTHING
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check(self) -> None:
        self.timer = None
        awaiting = self.awaiting
        if awaiting == NOTHING or self.transport.is_closing():
            return  # the next request's first byte starts a new clock; or it is over anyway
        now = self.loop.time()
        flow = self.pausing
        cycle = self.cycle
        if flow.read_paused or (
            awaiting == BODY and cycle is not None and cycle.waiting_for_100_continue
        ):
            # The server is not reading, or has not yet asked for the body: the client cannot
            # send. A fresh allowance from now on is approximate, and always in its favour.
            timeout = self.body_timeout if awaiting == BODY else self.header_timeout
            self.deadline = max(self.deadline, now - flow.paused_seconds + timeout)
            self._arm(now + timeout)
            return
        late = now - flow.paused_seconds - self.deadline
        if late < 0:
            self._arm(now - late)
            return
        self._expire(awaiting)

    def _expire(self, awaiting: int) -> None:
        self.awaiting = NOTHING
        cycle = self.cycle  # the request being received, or (head) the one before it
        if awaiting == HEAD:
            can_answer = cycle is None or cycle.response_complete
        else:
            can_answer = cycle is not None and not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            # The application must see http.disconnect now, not when the loop reports the closed
            # connection: an answer it wrote meanwhile would follow the 408 onto the socket.
            cycle.disconnected = True
            cycle.message_event.set()
        request_id = os.urandom(16).hex()  # as routing.proxy.pipeline makes them
        part = "head" if awaiting == HEAD else "body"
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
        return self._answer(
            408, "request_timeout", f"The request {part} was not received in time.", request_id
        )


class PausingFlow(FlowControl):
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
