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

It also refuses what httptools lets through or answers badly (RFC 9112), before any application
sees the request, so every served stack (`portier serve`, `dev.py run`) behaves the same (the
rules and the answers' bytes: gateway_site.refusals):

- a request line without a version (HTTP/0.9), no or several Host headers: 400 `bad_request`;
- Transfer-Encoding other than one final `chunked`: 501 `unsupported_transfer_encoding` (a
  proxy that dropped the other codings would hand the upstream a different body);
- a URL over PORTIER_MAX_URL_BYTES: 414 `uri_too_long`; more than PORTIER_MAX_HEADER_COUNT
  headers or PORTIER_MAX_HEADER_BYTES of them: 431 `headers_too_large`;
- a body over the gateway's own limit on its reserved paths (the smaller of
  PORTIER_MAX_BODY_BYTES and Django's DATA_UPLOAD_MAX_MEMORY_SIZE): 413 `payload_too_large`,
  from Content-Length before the body is read, or as soon as a chunked body passes it. Proxied
  paths have per-route limits, enforced by the forward stage;
- bytes the parser cannot read: 400 `bad_request` in the gateway's JSON shape. When they follow
  complete requests (pipelining), those requests are answered first, then the 400, as NGINX does.

Every refusal closes the connection "lingering" (as NGINX does): the answer is written, the
sending side shut, and what the client still sends is read and dropped for up to LINGER_SECONDS,
so the close is not a reset that would destroy the answer in the client's buffers. The same
happens when the application answers (e.g. a proxied 413) with `Connection: close` before the
request body was fully received.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import TimerHandle
from typing import Any

import httptools
from django.conf import settings
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway_site.deadlines import BODY, HEAD, NOTHING, ClientDeadlines, PausingFlow
from gateway_site.refusals import (
    HEADERS_TOO_LARGE,
    PAYLOAD_TOO_LARGE,
    UNPARSABLE,
    UNSUPPORTED_CODING,
    URI_TOO_LONG,
    LingeringClose,
    Refusal,
    error_answer,
    is_own_path,
    judge_head,
)
from routing.proxy.context import request_id_from

__all__ = ["PortierHttpProtocol"]

logger = logging.getLogger("portier.serve")

# Seconds a connection with no request yet may wait for one once the server shuts down.
SHUTDOWN_GRACE = 1.0
# Seconds a refused connection keeps reading (and dropping) what the client still sends.
LINGER_SECONDS = 2.0
# Bytes of an unfinished head (one endless header line) tolerated beyond the URL and header limits.
_HEAD_SLACK = 16 * 1024


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a connection whose request was refused."""


class PortierHttpProtocol(ClientDeadlines, HttpToolsProtocol):
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
        self.awaiting = NOTHING
        # On the client's clock (PausingFlow): loop time minus the time reading was paused.
        self.deadline = 0.0
        self.timer: TimerHandle | None = None
        self.timer_due = 0.0  # loop time the timer fires at
        self.pausing: PausingFlow  # self.flow, with its pauses counted (connection_made)
        self.closing = False  # the server is shutting down: answer what is coming, then close
        self.max_url: int = settings.PORTIER_MAX_URL_BYTES
        self.max_header_count: int = settings.PORTIER_MAX_HEADER_COUNT
        self.max_header_bytes: int = settings.PORTIER_MAX_HEADER_BYTES
        self.max_head_bytes = self.max_url + self.max_header_bytes + _HEAD_SLACK
        upload_limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        self.own_body_limit: int = min(
            settings.PORTIER_MAX_BODY_BYTES,
            upload_limit if upload_limit is not None else settings.PORTIER_MAX_BODY_BYTES,
        )
        # Per request: what the head has used of its limits, and what the body may still use.
        self.header_bytes = 0
        self.head_bytes = 0
        self.has_body = False
        self.body_left: int | None = None  # counted only on the gateway's own paths
        self.refused = False  # a request was refused: nothing more is parsed
        self.refusal: bytes | None = None  # its answer, owed after the requests before it
        self.lingering = False
        self.linger_timer: TimerHandle | None = None

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = self.pausing = PausingFlow(transport, self.loop)
        self._expect(HEAD, self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        if self.linger_timer is not None:
            self.linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, with the parser's errors and this protocol's refusals answered in the
        gateway's JSON shape, after the requests that came before them."""
        if self.refused:
            return  # lingering, or owing the answers before a refusal: the rest is dropped
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            if isinstance(exc, httptools.HttpParserCallbackError) and isinstance(
                exc.__context__, _Refused
            ):
                return  # answered (or owed) already
            # llhttp's "Invalid `Transfer-Encoding` header value" ("chunked, chunked", "chunked"
            # twice); its Content-Length + Transfer-Encoding errors stay 400s (no backquotes).
            refusal = UNSUPPORTED_CODING if "`Transfer-Encoding`" in str(exc) else UNPARSABLE
            if self.awaiting == BODY:
                self._refuse_current(*refusal)
            else:
                self._refuse_next(*refusal)
        else:
            if self.awaiting == HEAD:
                # httptools holds a header line until it ends: bound the memory of one that never
                # does (the precise limits are checked per header, in on_header).
                self.head_bytes += len(data)
                if self.head_bytes > self.max_head_bytes:
                    self._refuse_next(*HEADERS_TOO_LARGE)

    def shutdown(self) -> None:
        """Graceful shutdown (SIGTERM, or a worker recycled after max_requests). uvicorn closes
        every connection with no request under way, so a request whose connection was accepted
        a moment before (its bytes not yet read) was cut unanswered. A connection waiting for a
        request head gets SHUTDOWN_GRACE seconds for it instead, and is closed after its answer."""
        if self.awaiting != HEAD or self.transport.is_closing():
            super().shutdown()
            return
        self.closing = True
        self.loop.call_later(SHUTDOWN_GRACE, self._close_if_no_request)

    def _close_if_no_request(self) -> None:
        if self.awaiting == HEAD and not self.transport.is_closing():
            self.transport.close()

    def handle_websocket_upgrade(self) -> None:
        # The transport passes to the websocket protocol: this one's clock must not close it.
        self._stop_clock()
        super().handle_websocket_upgrade()

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_bytes = 0
        self.head_bytes = 0
        self.body_left = None
        if self.awaiting != HEAD:  # the first request's clock started with the connection
            self._expect(HEAD, self.header_timeout)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_url:
            self._refuse_next(*URI_TOO_LONG)
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self.header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if len(self.headers) > self.max_header_count or self.header_bytes > self.max_header_bytes:
            self._refuse_next(*HEADERS_TOO_LARGE)
            raise _Refused

    def on_headers_complete(self) -> None:
        refusal = self._judge_head()
        if refusal is not None:
            self._refuse_next(*refusal)
            raise _Refused
        super().on_headers_complete()
        cycle = self.cycle
        if self.has_body and cycle is not None and cycle.scope is self.scope:
            # Its application may answer and close before the body is all in: linger then.
            cycle.transport = LingeringClose(cycle, self._linger)  # type: ignore[assignment]
        if self.closing and self.cycle is not None:
            self.cycle.keep_alive = False
        # A request without a body completes in this same feed_data: its body deadline is set
        # and never looked at (the timer already armed for the head serves both).
        self._expect(BODY, self.body_timeout)

    def on_body(self, body: bytes) -> None:
        self.deadline += len(body) * self.seconds_per_byte
        if self.body_left is not None:
            self.body_left -= len(body)
            if self.body_left < 0:
                self._refuse_current(*PAYLOAD_TOO_LARGE)
                raise _Refused
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.awaiting = NOTHING
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.lingering:
            self.server_state.total_requests += 1
            return
        if self.refusal is not None and not self.pipeline and not self.transport.is_closing():
            # The last request before the refused one is answered: now the refusal.
            self.server_state.total_requests += 1
            self._linger(self.refusal)
            return
        super().on_response_complete()

    # Refusals

    def _judge_head(self) -> Refusal | None:
        """What is wrong with a complete head that httptools accepted, if anything; notes
        whether a body follows, and starts counting it on the gateway's own paths."""
        verdict = judge_head(self.parser.get_http_version(), self.headers)
        self.has_body = verdict.has_body
        if verdict.refusal is not None or not verdict.has_body or not is_own_path(self.url):
            return verdict.refusal
        if verdict.length is None:
            self.body_left = self.own_body_limit  # chunked: counted as it comes (on_body)
        elif verdict.length > self.own_body_limit:
            return PAYLOAD_TOO_LARGE
        return None

    def _refuse_next(self, status: int, code: str, message: str) -> None:
        """Refuse the request being parsed, whose application has not started: after the
        answers owed to the requests before it, if any are still under way."""
        self.refused = True
        self._stop_clock()
        request_id = self._request_id()
        answer = self._answer(status, code, message, request_id)
        self._log_refusal(status, code, request_id)
        cycle = self.cycle  # the request before this one, if any
        if (cycle is not None and not cycle.response_complete) or self.pipeline:
            self.refusal = answer
        else:
            self._linger(answer)

    def _refuse_current(self, status: int, code: str, message: str) -> None:
        """Refuse the request whose body is arriving: its application sees http.disconnect, and
        the client gets the answer now if the application has not started one."""
        self.refused = True
        self._stop_clock()
        cycle = self.cycle
        request_id = self._request_id()
        self._log_refusal(status, code, request_id)
        if cycle is None or self.pipeline:  # queued behind another answer: cut
            self.transport.close()
            return
        can_answer = not cycle.response_started
        if not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        if can_answer:
            self._linger(self._answer(status, code, message, request_id))
        else:
            self.transport.close()

    def _linger(self, answer: bytes) -> None:
        """Write the last answer, shut the sending side, and drop what the client still sends
        for up to LINGER_SECONDS: closing outright with unread bytes would reset the connection,
        and a reset can destroy the answer before the client reads it."""
        self.refused = self.lingering = True
        self._stop_clock()
        self._unset_keepalive_if_required()
        transport = self.transport
        if transport.is_closing():
            return
        if answer:
            transport.write(answer)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.flow.resume_reading()
        self.linger_timer = self.loop.call_later(LINGER_SECONDS, transport.close)

    def _request_id(self) -> str:
        for name, value in self.headers or ():
            if name == b"x-request-id":
                return request_id_from(value)
        return request_id_from(None)

    def _log_refusal(self, status: int, code: str, request_id: str) -> None:
        # The status and code only: a refused head may carry credentials in any header.
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
        logger.warning(
            "client %s: request refused, %d %s",
            client,
            status,
            code,
            extra={"request_id": request_id},
        )

    def _answer(self, status: int, code: str, message: str, request_id: str) -> bytes:
        return error_answer(status, code, message, request_id, self.server_state.default_headers)
