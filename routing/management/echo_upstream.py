"""A small upstream that echoes what it receives: the demo's backend and the tests' upstream.

GET /anything answers with the request it saw as JSON. Special paths exercise the proxy:
/_stream?bytes=N&chunk=K (N bytes, chunked), /_slow?seconds=S, /_cookies (two Set-Cookie),
/_redirect (a Location header), /_status/NNN, /_hop (hop-by-hop response headers).
Tests set `status_override` to make every answer fail (or succeed) at once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

__all__ = ["EchoUpstream"]


class EchoUpstream:
    """An ASGI app; `received` keeps every request seen, for tests to inspect."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name
        self.received: list[dict[str, Any]] = []
        self.status_override: int | None = None  # tests: answer every request with this status

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen = {
            "server": self.name,
            "method": scope["method"],
            "path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_bytes": len(body),
            "body": bytes(body[:4096]).decode("latin-1"),
        }
        self.received.append(seen)
        params = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        path = scope["path"]
        if path == "/_stream":
            await self._stream(
                send, int(params.get("bytes", "1048576")), int(params.get("chunk", "65536"))
            )
            return
        if path == "/_slow":
            await asyncio.sleep(float(params.get("seconds", "5")))
        headers = [(b"content-type", b"application/json"), (b"x-upstream", self.name.encode())]
        status = 200
        if path == "/_cookies":
            headers += [
                (b"set-cookie", b"a=1; Path=/; HttpOnly"),
                (b"set-cookie", b"b=2; Path=/api; SameSite=Lax"),
            ]
        elif path == "/_redirect":
            status = 302
            headers.append((b"location", b"http://internal.example:8080/next?x=1"))
        elif path.startswith("/_status/"):
            status = int(path.rsplit("/", 1)[1])
        elif self.status_override is not None:
            status = self.status_override
        elif path == "/_hop":
            headers += [
                (b"connection", b"x-secret-hop"),
                (b"x-secret-hop", b"1"),
                (b"keep-alive", b"timeout=5"),
                (b"x-kept", b"1"),
            ]
        payload = b"" if scope["method"] == "HEAD" else json.dumps(seen).encode()
        headers.append((b"content-length", str(len(json.dumps(seen).encode())).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _stream(self, send: Any, total: int, chunk: int) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        block = b"x" * chunk
        sent = 0
        while sent < total:
            part = block[: min(chunk, total - sent)]
            await send({"type": "http.response.body", "body": part, "more_body": True})
            sent += len(part)
        await send({"type": "http.response.body", "body": b""})
