"""Fallback upstream when NGINX is not installed: the same three endpoints as raw ASGI.

Bodies are read once at import from BENCH_PAYLOAD_DIR (written by bench/upstream.py); the 1 MiB
body goes out in 64 KiB chunks so the gateway relays a real stream.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_DIR = Path(os.environ.get("BENCH_PAYLOAD_DIR", "."))
_BODIES = {
    "/up/small": (b"application/json", (_DIR / "small.json").read_bytes()),
    "/up/16k": (b"application/json", (_DIR / "16k.json").read_bytes()),
    "/up/1m": (b"application/octet-stream", (_DIR / "1m.bin").read_bytes()),
}
_CHUNK = 64 * 1024


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    found = _BODIES.get(scope["path"])
    if found is None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    content_type, body = found
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for start in range(0, len(body), _CHUNK):
        chunk = body[start : start + _CHUNK]
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
