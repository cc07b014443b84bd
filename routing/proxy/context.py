"""What the pipeline's stages share about one request, and how a stage ends it early."""

from __future__ import annotations

import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routing.config.spec import RouteSpec, Snapshot, TargetSpec

__all__ = [
    "Answered",
    "ClientGone",
    "GatewayError",
    "GatewayResponse",
    "Headers",
    "Identity",
    "RequestContext",
    "request_id_from",
]

Headers = list[tuple[bytes, bytes]]

_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


def request_id_from(value: bytes | None) -> str:
    """The client's X-Request-ID when it is short and safe to log and echo, else a new one."""
    if value is not None and _SANE_REQUEST_ID.fullmatch(value):
        return value.decode("ascii")
    # An id, not a secret: Python's generator (reseeded in a forked child), as the trace ids are;
    # os.urandom was a system call per request.
    return f"{random.getrandbits(128):032x}"


@dataclass(frozen=True, slots=True)
class Identity:
    """The authenticated caller, as the gateway vouches for it to upstreams."""

    subject: str
    email: str
    roles: frozenset[str]
    primary_role: str  # X-User-Role: the token's own single role, or its first one
    method: str  # "jwt" or "api_key"
    key_prefix: str = ""


class ClientGone(Exception):
    """The client disconnected, or was cut for sending too slowly, while its body was read.

    Not a failure of the upstream: the target's health is left alone and the request is
    recorded as 499, the code NGINX uses for a request its client closed.
    """


class Answered(Exception):
    """Ends the request early with an answer that is not an error (a CORS preflight, the
    HTTPS redirect): raised by a stage before the upstream is involved."""

    def __init__(self, response: GatewayResponse) -> None:
        super().__init__(response.status)
        self.response = response


class GatewayError(Exception):
    """Ends the request with a standard JSON error body: raised by any stage."""

    def __init__(
        self, status: int, code: str, message: str, headers: Headers | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or []


@dataclass(slots=True)
class GatewayResponse:
    """An answer ready for ASGI: a fixed body, or a stream that `close` must always end."""

    status: int
    headers: Headers
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    close: Callable[[], Awaitable[None]] | None = None
    error_code: str | None = None


@dataclass(slots=True)
class RequestContext:
    """One request as the stages see it; only the proxy entries create it."""

    method: str
    scheme: str
    raw_path: bytes
    query_string: bytes
    headers: Headers  # lower-case names, as received
    client_ip: str  # the client, through trusted proxies (routing.proxy.client_ip)
    receive_body: Callable[[], AsyncIterator[bytes]] | None
    has_body: bool
    snapshot: Snapshot
    request_id: str = ""
    host: str = ""
    path: str = ""
    route: RouteSpec | None = None
    route_match: object | None = None
    identity: Identity | None = None
    peer_ip: str = ""  # the socket peer, appended to X-Forwarded-For
    response_headers: Headers = field(default_factory=list)  # added to every answer
    upstream_path: str = ""
    upstream_headers: Headers = field(default_factory=list)
    upstream_query: bytes | None = None  # set by a query transform; else the client's
    body: bytes | None = None  # the request body once read whole by a body transform
    target: TargetSpec | None = None  # the target that answered
    target_url: str = ""
    status: int = 0
    upstream_status: int | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    preflight: bool = False  # a CORS preflight the gateway answered itself
    cache_result: str = ""  # HIT, MISS, BYPASS or STALE on a caching route (metrics, log)
    audit_id: int | None = None  # the audit row of this request, once written
    audit_closed: bool = False
    upstream_seconds: float = 0.0
    tier_name: str = ""  # the rate-limit tier that counted the request (metrics)
    # Report-only: what a policy or tier in report-only mode would have refused ("policy" or
    # "limit"; "" when nothing would have), counted and logged but not enforced.
    would_deny: str = ""
    websocket_subprotocols: tuple[str, ...] = ()  # a WebSocket upgrade's, for the upstream
    token_subprotocol: bool = False  # the upgrade offered its token as "bearer", <token>
    trace_id: str = ""  # W3C trace context: the trace this request belongs to
    span_id: str = ""  # the gateway's own span in that trace (the upstream's parent)
    trace_flags: str = "00"  # "01" when sampled
    parent_span_id: str = ""  # the caller's span, when it sent a valid traceparent
    started: float = field(default_factory=time.perf_counter)

    def header(self, name: bytes) -> bytes | None:
        """The first value of a request header (name in lower case)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None
