"""A minimal fast Python proxy: the bar the gateway's per-request overhead is compared with.

Raw ASGI on uvicorn (uvloop + httptools), one HS256 JWT check (PyJWT), one Redis INCR
(redis.asyncio), one pooled aiohttp ClientSession, the answer streamed back. No routing table,
no header policy, no logging; GET without a request body only. Run by bench/run.py, pinned to
core 0 like the gateway, as
    REF_UPSTREAM=http://127.0.0.1:8080 REF_JWT_SECRET=s python -m uvicorn bench.reference_proxy:app
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import jwt
import redis.asyncio as aioredis

UPSTREAM = os.environ.get("REF_UPSTREAM", "http://127.0.0.1:8080")
SECRET = os.environ.get("REF_JWT_SECRET", "")
REDIS_URL = os.environ.get("REF_REDIS_URL", "")
COUNTER_KEY = os.environ.get("REF_COUNTER_KEY", "bench:reference:hits")
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"host"}
state: dict[str, Any] = {}


async def respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] != "lifespan.shutdown":  # startup comes first
        connector = aiohttp.TCPConnector(limit=512, keepalive_timeout=30)
        state["session"] = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        state["redis"] = aioredis.from_url(REDIS_URL) if REDIS_URL else None
        await send({"type": "lifespan.startup.complete"})
    await state["session"].close()
    if state["redis"] is not None:
        await state["redis"].aclose()
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    headers = dict(scope["headers"])
    token = headers.get(b"authorization", b"").removeprefix(b"Bearer ")
    try:
        jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        return await respond(send, 401, b'{"error":"invalid_token"}')
    if state["redis"] is not None:
        await state["redis"].incr(COUNTER_KEY)
    url = UPSTREAM + scope["raw_path"].decode("latin-1")
    if scope["query_string"]:
        url += "?" + scope["query_string"].decode("latin-1")
    forward = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
    forward = {k: v for k, v in forward.items() if k.encode() not in HOP_BY_HOP}
    session: aiohttp.ClientSession = state["session"]
    async with session.request(scope["method"], url, headers=forward) as upstream:
        out = [(k.lower(), v) for k, v in upstream.raw_headers if k.lower() not in HOP_BY_HOP]
        await send({"type": "http.response.start", "status": upstream.status, "headers": out})
        async for chunk in upstream.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
