"""Raw HTTP/1.1 for the edge tests: bytes sent exactly as written, every answer read back, and
upstreams that record what reached them (one that reads bodies by Content-Length only, as many
simple servers do, and one that records raw bytes)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "Answer",
    "LengthOnlyUpstream",
    "RawUpstream",
    "connect",
    "exchange",
    "length_only_upstream",
    "raw_upstream",
    "read_answers",
]


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]]  # lower-case names
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)

    def assert_error(self, status: int, code: str) -> None:
        """The gateway's one error shape, with its request id echoed in X-Request-ID."""
        assert self.status == status, (self.status, self.body[:200])
        assert self.header("content-type") == "application/json"
        error = self.json()["error"]
        assert error["code"] == code
        assert error["message"] and "Traceback" not in error["message"]
        assert error["request_id"] and self.header("x-request-id") == error["request_id"]


def connect(url: str, timeout: float = 5) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_to_close(sock: socket.socket, limit: float = 5) -> bytes:
    """Everything the gateway sends until it closes the connection (fails after `limit`)."""
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def exchange(url: str, data: bytes, limit: float = 5) -> list[Answer]:
    """Send `data` byte for byte; every answer the gateway gives before it closes."""
    with connect(url) as sock:
        sock.sendall(data)
        return read_answers(read_to_close(sock, limit))


def read_answers(raw: bytes) -> list[Answer]:
    answers = []
    while raw:
        head, separator, raw = raw.partition(b"\r\n\r\n")
        assert separator, f"an incomplete answer: {head[:80]!r}"
        lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        if headers.get("transfer-encoding") == ["chunked"]:
            body, raw = _dechunk(raw)
        else:
            length = int(headers.get("content-length", ["0"])[0])
            body, raw = raw[:length], raw[length:]
        answers.append(Answer(int(lines[0].split()[1]), headers, body))
    return answers


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out), data[2:]
        out += data[:size]
        data = data[size + 2 :]


@dataclass
class LengthOnlyUpstream:
    """What reached a server that reads a body by its Content-Length only."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def length_only_upstream() -> Iterator[LengthOnlyUpstream]:
    """http.server, which ignores Transfer-Encoding: a chunked body reaches its handler empty."""
    upstream: LengthOnlyUpstream

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen = {
                "content_length": self.headers.get("Content-Length"),
                "transfer_encoding": self.headers.get("Transfer-Encoding"),
                "body": body,
            }
            upstream.received.append(seen)
            answer = json.dumps({"body_bytes": len(body)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    upstream = LengthOnlyUpstream(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class RawUpstream:
    """A listening socket that records the bytes of one connection until the gateway closes
    it, and never answers."""

    url: str
    data: bytearray = field(default_factory=bytearray)
    accepted: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)

    def wait_closed(self, timeout: float) -> bytes:
        assert self.closed.wait(timeout), "the gateway kept its upstream connection open"
        return bytes(self.data)


@contextmanager
def raw_upstream() -> Iterator[RawUpstream]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    upstream = RawUpstream(f"http://127.0.0.1:{listener.getsockname()[1]}")

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:  # nothing came
            return
        upstream.accepted.set()
        with conn:
            try:
                while chunk := conn.recv(65536):
                    upstream.data += chunk
            except ConnectionResetError:
                pass
        upstream.closed.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        listener.close()
        thread.join(timeout=1)
