"""Answer compression end to end: a streamed answer compressed as it streams, brotli for a client
that takes it, and every answer that must be left as the upstream sent it."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import brotli
import pytest

from tests.conftest import make_route, make_service, publish
from tests.raw_http import raw_exchange
from tests.servers import ServerThread

pytestmark = pytest.mark.django_db

CHUNK = 64 * 1024
# 1 MiB of text that compresses well but not to nothing: numbered lines.
TEXT = b"".join(
    b"line %07d: the quick brown fox jumps over the lazy dog\n" % i for i in range(20000)
)
BODY = (TEXT * (1 + (1 << 20) // len(TEXT)))[: 1 << 20]
SMALL = b"s" * 100
PAGE = b"p" * 4096


class StreamingUpstream:
    """Streams BODY in 64 KiB chunks without a Content-Length (/big; /gated holds its last chunk
    until `release` is set) and answers the other paths with fixed bodies."""

    def __init__(self) -> None:
        self.release = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        path = scope["path"]
        if path in ("/big", "/gated"):
            await self._stream(send, gated=path == "/gated")
            return
        content_type, body, extra = {
            "/small": (b"text/plain", SMALL, []),
            "/png": (b"image/png", PAGE, []),
            "/events": (b"text/event-stream", b"data: " + PAGE + b"\n\n", []),
            "/encoded": (b"text/plain", gzip.compress(PAGE), [(b"content-encoding", b"gzip")]),
            "/etag": (b"application/json", b'"' + PAGE + b'"', [(b"etag", b'"v1"')]),
        }.get(path, (b"text/plain", PAGE, []))
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers + extra})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, send: Any, *, gated: bool) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for start in range(0, len(BODY), CHUNK):
            if gated and start + CHUNK >= len(BODY):
                await asyncio.to_thread(self.release.wait, 30)
            chunk = BODY[start : start + CHUNK]
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def streaming() -> Iterator[ServerThread]:
    server = ServerThread(StreamingUpstream()).start()
    yield server
    server.app.release.set()
    server.stop()


@pytest.fixture
def compressed_route(streaming, gateway_defaults):
    """Every path of the streaming upstream under /z, compression on gateway-wide."""
    make_route(make_service("svc", streaming.url), "/z", strip_prefix=True)
    gateway_defaults(compression=True, compression_min_bytes=1024)
    return streaming


def test_a_streamed_answer_is_gzipped_as_it_streams(client, compressed_route):
    with client.stream("GET", "/z/big", headers={"Accept-Encoding": "gzip"}) as response:
        encoded = b"".join(response.iter_raw())

    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert "content-length" not in response.headers
    assert "accept-encoding" in response.headers["vary"].lower()
    assert len(encoded) < len(BODY) // 4
    assert gzip.decompress(encoded) == BODY


def test_compressed_bytes_reach_the_client_before_the_upstream_has_finished(
    gateway, compressed_route
):
    compressed_route.app.release.clear()
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(
            b"GET /z/gated HTTP/1.1\r\nHost: api.example.com\r\nAccept-Encoding: gzip\r\n"
            b"Connection: close\r\n\r\n"
        )
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < 1024:
            received = sock.recv(65536)
            assert received, "the gateway closed before sending compressed bytes"
            raw += received
        # The upstream is still holding its last chunk: these bytes were compressed on the way.
        head, _, early = raw.partition(b"\r\n\r\n")
        assert b"content-encoding: gzip" in head.lower()
        assert not compressed_route.app.release.is_set()
        compressed_route.app.release.set()
        while received := sock.recv(65536):
            raw += received
    assert _dechunk(early).startswith(b"\x1f\x8b")  # the gzip stream had begun
    answer_body = _dechunk(raw.partition(b"\r\n\r\n")[2])
    assert zlib.decompress(answer_body, 16 + zlib.MAX_WBITS) == BODY


def test_brotli_is_preferred_when_the_client_accepts_it(client, compressed_route):
    with client.stream("GET", "/z/big", headers={"Accept-Encoding": "gzip, br"}) as response:
        encoded = b"".join(response.iter_raw())

    assert response.headers["content-encoding"] == "br"
    assert "content-length" not in response.headers
    assert brotli.decompress(encoded) == BODY


@pytest.mark.parametrize(
    ("path", "accept", "body"),
    [
        ("/z/page", None, PAGE),  # the client did not ask for it
        ("/z/page", "gzip;q=0, br;q=0", PAGE),  # nor will it take it
        ("/z/small", "gzip, br", SMALL),  # under compression_min_bytes
        ("/z/png", "gzip, br", PAGE),  # already compressed by its format
        ("/z/events", "gzip, br", b"data: " + PAGE + b"\n\n"),  # each event must leave at once
    ],
)
def test_answers_left_as_the_upstream_sent_them(gateway, compressed_route, path, accept, body):
    head = f"GET {path} HTTP/1.1\r\nHost: api.example.com"
    if accept is not None:
        head += f"\r\nAccept-Encoding: {accept}"

    answer = raw_exchange(gateway.url, head.encode())

    assert answer.status == 200
    assert answer.header("content-encoding") is None
    assert answer.header("content-length") == str(len(body))
    assert answer.body == body


@pytest.mark.parametrize("accept", [None, "identity", "gzip;q=0, br;q=0"])
def test_an_answer_sent_plain_that_could_be_compressed_varies_on_accept_encoding(
    gateway, compressed_route, accept
):
    """Else a shared cache in front keeps this plain copy and gives it to a gzip client, or
    keeps the gzip copy and gives it to this one."""
    head = "GET /z/page HTTP/1.1\r\nHost: api.example.com"
    if accept is not None:
        head += f"\r\nAccept-Encoding: {accept}"

    answer = raw_exchange(gateway.url, head.encode())

    assert answer.header("content-encoding") is None
    assert answer.body == PAGE
    assert "accept-encoding" in _vary(answer.headers.get("vary", []))


@pytest.mark.parametrize(
    "path",
    [
        "/z/small",  # under compression_min_bytes
        "/z/png",  # not a compressible type
        "/z/events",  # never compressed
    ],
)
def test_an_answer_never_compressed_does_not_vary_on_accept_encoding(
    client, compressed_route, path
):
    for accept in ("gzip, br", "identity"):
        response = client.get(path, headers={"Accept-Encoding": accept})
        assert "content-encoding" not in response.headers
        assert "accept-encoding" not in _vary(response.headers.get_list("vary"))


def test_an_already_encoded_answer_is_not_encoded_again(client, compressed_route):
    with client.stream("GET", "/z/encoded", headers={"Accept-Encoding": "gzip, br"}) as response:
        raw = b"".join(response.iter_raw())

    assert response.headers.get_list("content-encoding") == ["gzip"]
    assert gzip.decompress(raw) == PAGE


def test_a_head_request_is_answered_without_an_encoding(gateway, compressed_route):
    answer = raw_exchange(
        gateway.url, b"HEAD /z/page HTTP/1.1\r\nHost: api.example.com\r\nAccept-Encoding: gzip"
    )

    assert answer.status == 200
    assert answer.header("content-encoding") is None
    assert answer.header("content-length") == str(len(PAGE))
    assert answer.body == b""


def test_a_route_can_turn_gateway_wide_compression_off(client, streaming, gateway_defaults):
    make_route(make_service("svc", streaming.url), "/z", strip_prefix=True, compression=False)
    gateway_defaults(compression=True)

    response = client.get("/z/page", headers={"Accept-Encoding": "gzip"})

    assert "content-encoding" not in response.headers
    assert "accept-encoding" not in _vary(response.headers.get_list("vary"))
    assert response.content == PAGE


def test_a_route_can_turn_compression_on(client, streaming):
    make_route(make_service("svc", streaming.url), "/z", strip_prefix=True, compression=True)
    publish()

    response = client.get("/z/page", headers={"Accept-Encoding": "gzip"})

    assert response.headers["content-encoding"] == "gzip"
    assert response.content == PAGE


def test_a_compressed_answers_strong_etag_is_made_weak(client, compressed_route):
    compressed = client.get("/z/etag", headers={"Accept-Encoding": "gzip"})
    plain = client.get("/z/etag", headers={"Accept-Encoding": "identity"})

    assert compressed.headers["content-encoding"] == "gzip"
    assert compressed.headers["etag"] == 'W/"v1"'
    assert plain.headers["etag"] == '"v1"'
    assert compressed.content == plain.content


def _vary(values: list[str]) -> set[str]:
    """The header names an answer's Vary lines list, lower case."""
    return {name.strip().lower() for value in values for name in value.split(",")}


def _dechunk(data: bytes) -> bytes:
    """The payload of a chunked body, as much of it as has arrived."""
    out = bytearray()
    while data:
        size_line, found, rest = data.partition(b"\r\n")
        if not found:
            break
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)
