"""The lean proxy entry: runs the pipeline straight from ASGI for every non-reserved path.

Django's generic ASGI handler spools each body to a temporary file and hops to a thread per
request for signals and response.close(); proxied requests skip that here. It is a thin adapter:
the pipeline, and so the behaviour, is the same one routing.proxy.django_entry runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from routing.config.holder import holder
from routing.proxy import pipeline
from routing.proxy.client_ip import resolve_client_ip
from routing.proxy.context import ClientGone, GatewayResponse, RequestContext, request_id_from

__all__ = ["context_from_scope", "proxy_app"]

logger = logging.getLogger("portier.entry")

Scope = dict[str, Any]
_SMALL_BODY = 64 * 1024


def context_from_scope(scope: Scope, receive: Any) -> RequestContext:
    headers: list[tuple[bytes, bytes]] = list(scope["headers"])
    has_body = False
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            has_body = True
            break

    async def receive_body() -> AsyncIterator[bytes]:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                ctx.bytes_in += len(chunk)
                yield chunk
            if not message.get("more_body", False):
                return

    client = scope.get("client")
    peer = client[0] if client else ""
    ctx = RequestContext(
        method=scope["method"],
        scheme=scope.get("scheme", "http"),
        raw_path=scope.get("raw_path") or scope["path"].encode("utf-8"),
        query_string=scope.get("query_string", b""),
        headers=headers,
        client_ip=resolve_client_ip(
            peer, [value for name, value in headers if name == b"x-forwarded-for"]
        ),
        peer_ip=peer,
        receive_body=receive_body,
        has_body=has_body,
        snapshot=holder.current,
    )
    ctx.request_id = request_id_from(ctx.header(b"x-request-id"))
    return ctx


async def proxy_app(scope: Scope, receive: Any, send: Any) -> None:
    ctx = context_from_scope(scope, receive)
    response = await pipeline.run(ctx)
    try:
        await _send(response, ctx, receive, send)
    finally:
        await pipeline.finish(ctx, response)


async def _send(response: GatewayResponse, ctx: RequestContext, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": response.status, "headers": response.headers}
    )
    if response.stream is None:
        await send({"type": "http.response.body", "body": response.body})
        return
    # A client that goes away must stop the relay, or a large answer is read for nobody. The
    # request body is fully sent before an HTTP/1.1 upstream answers, so receive() is free now.
    # A small answer with a known length is sent before a disconnect could matter: no watcher,
    # and in one body message (a send to uvicorn is ~10 % of the event loop: bench --profile).
    if _is_small(response.headers):
        body = b"".join([chunk async for chunk in response.stream])
        await send({"type": "http.response.body", "body": body})
        return
    gone = asyncio.Event()
    watcher = asyncio.create_task(_watch_disconnect(receive, gone))
    try:
        # UpstreamBroken propagates: with the headers sent, cutting the connection is the only
        # honest signal left that the answer is incomplete.
        async for chunk in response.stream:
            if gone.is_set():
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        watcher.cancel()


def _is_small(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return value.isdigit() and int(value) <= _SMALL_BODY
    return False


async def _watch_disconnect(receive: Any, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
