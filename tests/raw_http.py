"""HTTP/1.1 over a raw socket, for inputs a client library would re-encode or refuse to send
(invalid percent-escapes, CONNECT's authority form, odd header spellings)."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

__all__ = ["RawAnswer", "raw_exchange"]


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, list[str]]  # lower-case names
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def raw_exchange(url: str, head: bytes, body: bytes = b"") -> RawAnswer:
    """Send `head` (request line and headers, without the blank line) byte for byte, with
    `Connection: close` added, then `body`; read the whole answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = head.rstrip(b"\r\n") + b"\r\nConnection: close\r\n\r\n" + body
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    top, _, rest = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if headers.get("transfer-encoding") == ["chunked"]:
        rest = _dechunk(rest)
    return RawAnswer(int(lines[0].split()[1]), headers, rest, raw)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)
