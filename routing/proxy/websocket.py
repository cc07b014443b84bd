"""WebSocket routes: the upgrade goes through the pipeline's checks, then frames are relayed.

The upgrade request is a RequestContext like any other and meets the same stages as plain HTTP
(match, admission, identity, policy, rate limit, transform, the audit row). A refusal is the
gateway's usual JSON error with its status, sent as the handshake's HTTP answer (ASGI's
`websocket.http.response`), so a browser or a client library sees 401, 403 or 429 as such.
Browsers cannot set headers on a WebSocket, so a token may also come as the subprotocol pair
`bearer, <token>` or as the query parameter `access_token`; either is moved into the request's
credentials before the stages run and never reaches the upstream, the log or the audit row.

Once the upstream accepted the upgrade (websockets' client, through one target the balancer
holds for the connection's life), the client's handshake is accepted with the subprotocol the
upstream chose, and messages are relayed both ways until one side closes: its close code is
passed on (codes that must not be sent on the wire become 1000, or 1014 when the upstream
vanished without one). Silence both ways for the route's idle timeout closes both with 1001
"idle timeout"; a graceful shutdown closes them with 1001 too (gateway_site.ws_protocol). A
route may cap its open connections per gateway process (503 past it). The connection is
recorded when it ends: status 101, its duration, the bytes of its messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any
from urllib.parse import unquote_plus

from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from accounts.services import parse_key
from routing.config.spec import RouteSpec
from routing.observe import metrics, tracing
from routing.proxy.asgi_entry import context_from_scope
from routing.proxy.context import Answered, GatewayError, GatewayResponse, RequestContext
from routing.proxy.errors import error_response
from routing.proxy.stages import record
from routing.proxy.stages.access import authorize
from routing.proxy.stages.admission import admit
from routing.proxy.stages.audit import audit_close, audit_close_soon, audit_deny, audit_open
from routing.proxy.stages.identity import authenticate
from routing.proxy.stages.limits import limit
from routing.proxy.stages.match import match
from routing.proxy.stages.transform import transform
from routing.upstream.lease import Lease, Overloaded

__all__ = ["TOKEN_PARAMETER", "TOKEN_SUBPROTOCOL", "websocket_app"]

logger = logging.getLogger("portier.websocket")

TOKEN_SUBPROTOCOL = "bearer"  # noqa: S105 (a marker: Sec-WebSocket-Protocol: bearer, <token>)
TOKEN_PARAMETER = b"access_token"  # ?access_token=<token>
# The stages of pipeline.BEFORE after `match` (framing is the websocket server's).
STAGES = (admit, authenticate, authorize, limit, transform, audit_open)
# The handshake's own headers: the upstream handshake is websockets' to write.
_HANDSHAKE = frozenset(
    {
        b"host",
        b"connection",
        b"upgrade",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"content-length",
        b"transfer-encoding",
    }
)
# Close codes an endpoint must never send (RFC 6455 7.4.1), and what is sent instead.
_UNSENDABLE = {1005: 1000, 1006: 1014, 1015: 1014}
IDLE_CODE, IDLE_REASON = 1001, "idle timeout"

open_connections: Counter[int] = Counter()  # route id -> connections open in this process


async def websocket_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app for a `websocket` scope on a proxied path."""
    if (await receive())["type"] != "websocket.connect":
        return
    ctx, moved = _context(scope)
    record.started()
    error_code: str | None = None
    try:
        upstream, lease = await _open(ctx, moved)
    except GatewayError as exc:
        error_code = exc.code
        try:
            await _refuse(ctx, scope, send, await audit_deny(ctx, exc))
        except OSError:  # the client left during the handshake (uvicorn's ClientDisconnected)
            pass
        finally:
            await audit_close(ctx, error_code)
            record.record(ctx, error_code)
        return
    except BaseException:  # cancelled (the server is stopping): the audit row is closed anyway
        record.abandoned()
        audit_close_soon(ctx, "client_closed_request")
        raise
    route = ctx.route
    assert route is not None and route.websocket is not None
    metrics.websocket_opened(route.name)
    try:
        headers = [(b"x-request-id", ctx.request_id.encode()), *ctx.response_headers]
        # A browser that offered subprotocols (the token's "bearer" pair) fails a handshake
        # that picks none: "bearer" is picked when the upstream picked nothing.
        chosen = upstream.subprotocol or (TOKEN_SUBPROTOCOL if ctx.token_subprotocol else None)
        await send({"type": "websocket.accept", "subprotocol": chosen, "headers": headers})
        ctx.status = 101
        await _relay(ctx, route, upstream, receive, send)
    except OSError:  # the client vanished: nothing to answer, nothing went wrong here
        error_code = error_code or "client_closed_request"
    except Exception:
        logger.exception("websocket relay failed for request %s", ctx.request_id)
        error_code = "internal_error"
    finally:
        open_connections[route.id] -= 1
        metrics.websocket_closed(route.name)
        with contextlib.suppress(Exception):
            await upstream.close()
        lease.close()
        await audit_close(ctx, error_code)
        record.record(ctx, error_code)


def _context(scope: dict[str, Any]) -> tuple[RequestContext, tuple[bytes, bytes] | None]:
    """The upgrade as a RequestContext, with a token from the subprotocols or the query moved
    into its credentials (and out of what is logged and audited), and the header it became: the
    upstream never receives it, whatever the route's forward_authorization says."""
    http_scope = {
        **scope,
        "method": "GET",
        "scheme": "https" if scope["scheme"] == "wss" else "http",
    }
    ctx = context_from_scope(http_scope, None)
    subprotocols = list(scope.get("subprotocols") or [])
    token = None
    if TOKEN_SUBPROTOCOL in subprotocols:
        at = subprotocols.index(TOKEN_SUBPROTOCOL)
        if at + 1 < len(subprotocols):
            token = subprotocols[at + 1]
        del subprotocols[at : at + 2]
        ctx.token_subprotocol = True
    query, from_query = _without_token(ctx.query_string)
    ctx.query_string = query
    token = token or from_query
    # The offered subprotocols may carry the token: only the rest is kept, for the upstream.
    ctx.headers = [
        (name, value) for name, value in ctx.headers if name != b"sec-websocket-protocol"
    ]
    ctx.websocket_subprotocols = tuple(subprotocols)
    has_credentials = ctx.header(b"authorization") or ctx.header(b"x-api-key")
    if not token or has_credentials:
        return ctx, None
    if parse_key(token) is not None:
        moved = (b"x-api-key", token.encode("latin-1"))
    else:
        moved = (b"authorization", b"Bearer " + token.encode("latin-1"))
    ctx.headers.append(moved)
    return ctx, moved


def _without_token(query: bytes) -> tuple[bytes, str | None]:
    """The query without `access_token` (every other parameter byte for byte), and its value."""
    if TOKEN_PARAMETER not in query:
        return query, None
    kept, token = [], None
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if name == TOKEN_PARAMETER:
            token = token or unquote_plus(value.decode("latin-1"))
        else:
            kept.append(part)
    return b"&".join(kept), token


async def _open(
    ctx: RequestContext, moved: tuple[bytes, bytes] | None
) -> tuple[ClientConnection, Lease]:
    """Run the stages, then open the upstream connection; GatewayError for any refusal."""
    tracing.begin(ctx)
    await match(ctx)
    route = ctx.route
    assert route is not None
    if route.websocket is None:
        raise GatewayError(
            400, "websocket_not_allowed", "This route does not accept WebSocket connections."
        )
    try:
        for stage in STAGES:
            await stage(ctx)
    except Answered:  # the HTTPS redirect: an upgrade cannot follow one
        raise GatewayError(403, "https_required", "Connect with wss://.") from None
    spec = route.websocket
    if spec.max_connections and open_connections[route.id] >= spec.max_connections:
        raise GatewayError(
            503,
            "too_many_connections",
            "The route has its most WebSocket connections open; try again shortly.",
            [(b"retry-after", b"1")],
        )
    # Counted from here, before the upstream handshake: handshakes in flight hold a place too,
    # or concurrent upgrades would all pass the cap. websocket_app gives it back at the end.
    open_connections[route.id] += 1
    try:
        lease = Lease(route.service)
    except Overloaded:
        open_connections[route.id] -= 1
        raise GatewayError(
            503, "overloaded", "The service is at capacity; try again shortly."
        ) from None
    try:
        if moved is not None:
            ctx.upstream_headers = [h for h in ctx.upstream_headers if h != moved]
        return await _connect(ctx, route, lease), lease
    except BaseException:
        open_connections[route.id] -= 1
        lease.close()
        raise


async def _connect(ctx: RequestContext, route: RouteSpec, lease: Lease) -> ClientConnection:
    service = route.service
    target = lease.pick()
    if target is None:
        raise GatewayError(
            503, "upstream_unavailable", "No healthy target of the service is available."
        )
    ctx.target_url = target.key
    origin = target.origin
    scheme = "wss" if origin.scheme == "https" else "ws"
    query = ctx.query_string if ctx.upstream_query is None else ctx.upstream_query
    path = target.base_path + ctx.upstream_path + ("?" + query.decode("latin-1") if query else "")
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in ctx.upstream_headers
        if name not in _HANDSHAKE
    ]
    try:
        upstream = await connect(
            f"{scheme}://{origin.netloc.decode('ascii')}{path}",
            additional_headers=headers,
            subprotocols=list(ctx.websocket_subprotocols) or None,
            open_timeout=service.connect_timeout + service.read_timeout,
            ping_interval=None,  # the client's pings are answered by the gateway; the
            # upstream's by websockets here: each hop keeps its own connection alive
            max_size=settings.PORTIER_WEBSOCKET_MAX_MESSAGE_BYTES,
            compression=None,
            user_agent_header=None,
            proxy=None,
        )
    except InvalidStatus as exc:
        lease.answered(exc.response.status_code)
        ctx.upstream_status = exc.response.status_code
        raise GatewayError(
            502,
            "upstream_refused_upgrade",
            f"The upstream answered the upgrade with {exc.response.status_code}.",
        ) from None
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        lease.failed()
        logger.warning("websocket upstream %s failed %s: %r", target.key, ctx.request_id, exc)
        raise GatewayError(
            502, "upstream_unavailable", "The upstream did not accept the WebSocket."
        ) from None
    lease.answered(101)
    ctx.upstream_status = 101
    ctx.target = target
    return upstream


async def _refuse(ctx: RequestContext, scope: dict[str, Any], send: Any, exc: GatewayError) -> None:
    """The refusal as the handshake's HTTP answer, when the server can send one."""
    ctx.status = exc.status
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    response: GatewayResponse = error_response(exc, ctx.request_id, ctx.response_headers)
    await send(
        {"type": "websocket.http.response.start", "status": exc.status, "headers": response.headers}
    )
    await send({"type": "websocket.http.response.body", "body": response.body})


class _Activity:
    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = asyncio.get_running_loop().time()


async def _relay(
    ctx: RequestContext, route: RouteSpec, upstream: ClientConnection, receive: Any, send: Any
) -> None:
    """Relay until one side closes or both stay silent for the idle timeout."""
    assert route.websocket is not None
    idle = route.websocket.idle_timeout
    activity = _Activity()
    loop = asyncio.get_running_loop()
    from_client = asyncio.create_task(_client_to_upstream(ctx, route, upstream, receive, activity))
    from_upstream = asyncio.create_task(_upstream_to_client(ctx, route, upstream, send, activity))
    tasks = {from_client, from_upstream}
    try:
        while True:
            remaining = activity.last + idle - loop.time()
            if remaining <= 0:
                await _close_both(upstream, send, IDLE_CODE, IDLE_REASON)
                return
            done, _ = await asyncio.wait(tasks, timeout=remaining, return_when="FIRST_COMPLETED")
            if from_client in done:
                code = from_client.result()
                with contextlib.suppress(Exception):
                    await upstream.close(code=_sendable(code))
                return
            if from_upstream in done:
                from_upstream.result()
                code = upstream.close_code if upstream.close_code is not None else 1006
                await _close_client(send, _sendable(code), upstream.close_reason or "")
                return
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _client_to_upstream(
    ctx: RequestContext,
    route: RouteSpec,
    upstream: ClientConnection,
    receive: Any,
    activity: _Activity,
) -> int:
    """Forward the client's messages; returns the client's close code."""
    loop = asyncio.get_running_loop()
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return int(message.get("code") or 1005)
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        activity.last = loop.time()
        ctx.bytes_in += len(data)
        metrics.websocket_message(route.name, "in")
        try:
            await upstream.send(data)
        except ConnectionClosed:
            # The upstream is closing: its close code comes through the other direction, and
            # this task waits to be cancelled.
            await asyncio.Event().wait()


async def _upstream_to_client(
    ctx: RequestContext, route: RouteSpec, upstream: ClientConnection, send: Any, activity: Any
) -> None:
    """Forward the upstream's messages until it closes."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ConnectionClosed):
        async for data in upstream:
            activity.last = loop.time()
            ctx.bytes_out += len(data)
            metrics.websocket_message(route.name, "out")
            if isinstance(data, str):
                await send({"type": "websocket.send", "text": data})
            else:
                await send({"type": "websocket.send", "bytes": data})


def _sendable(code: int) -> int:
    return _UNSENDABLE.get(code, code)


async def _close_client(send: Any, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # the client may be gone already
        await send({"type": "websocket.close", "code": code, "reason": reason[:120]})


async def _close_both(upstream: ClientConnection, send: Any, code: int, reason: str) -> None:
    await _close_client(send, code, reason)
    with contextlib.suppress(Exception):
        await upstream.close(code=code, reason=reason)
