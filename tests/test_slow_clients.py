"""Slow clients cannot hold a connection forever (gateway_site.protocol), seen from a raw socket.

Deadlines are shortened to one second with override_settings (read per connection, so the shared
gateway fixture applies them) or with the environment of a separate `python -m gateway_site.serve`.
Timing windows are generous: what matters is that the connection ends, and not much too early.
"""

from __future__ import annotations

import http.client
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from django.test import override_settings

from tests.conftest import make_route, make_service, publish, received
from tests.servers import gateway_processes

pytestmark = pytest.mark.django_db

ONE_SECOND = {
    "PORTIER_CLIENT_HEADER_TIMEOUT": 1.0,
    "PORTIER_CLIENT_BODY_TIMEOUT": 1.0,
    "PORTIER_CLIENT_BODY_MIN_RATE": 500.0,
}


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, limit: float) -> bytes:
    """All the gateway sends until it closes the connection; fails after `limit` seconds."""
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the connection was still open after {limit}s; received {data[:80]!r}")
    except ConnectionResetError:
        pass
    return data


def trickle(sock: socket.socket, data: bytes, every: float, limit: float) -> bytes:
    """Send `data` one byte every `every` seconds until the gateway answers or closes, then read
    to the end; fails after `limit` seconds. Every byte comes well within the keep-alive timeout."""
    give_up = time.monotonic() + limit
    for byte in data:
        answered, _, _ = select.select([sock], [], [], every)
        if answered:
            break
        if time.monotonic() > give_up:
            pytest.fail(f"the gateway was still reading after {limit}s")
        sock.sendall(bytes([byte]))
    return read_until_closed(sock, max(give_up - time.monotonic(), 0.1))


def assert_408(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert b"\r\nconnection: close" in head
    assert json.loads(body)["error"]["code"] == "request_timeout"


def test_it_answers_408_to_a_client_that_sends_nothing():
    with gateway_processes(count=1, PORTIER_CLIENT_HEADER_TIMEOUT="1") as (url,):
        sock = connect(url)
        started = time.monotonic()
        answer = read_until_closed(sock, limit=5)
        elapsed = time.monotonic() - started
        sock.close()

    assert_408(answer)
    assert 0.8 <= elapsed < 3


def test_it_cuts_a_client_trickling_its_head_at_the_deadline(gateway, caplog):
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Secret: " + b"s" * 200 + b"\r\n\r\n"
    caplog.set_level(logging.WARNING, logger="portier.serve")
    with override_settings(**ONE_SECOND):
        sock = connect(gateway.url)
        started = time.monotonic()
        answer = trickle(sock, head, every=0.2, limit=5)  # the whole head would take 40 s
        elapsed = time.monotonic() - started
        sock.close()

    assert_408(answer)
    assert 0.8 <= elapsed < 3
    lines = [r.getMessage() for r in caplog.records if r.name == "portier.serve"]
    assert any("request head" in line for line in lines)
    assert not any("X-Secret" in line or "sss" in line for line in lines)


def test_it_cuts_a_request_whose_body_trickles_and_the_upstream_gets_no_complete_request(gateway):
    with raw_upstream() as upstream:
        make_route(make_service("uploads", upstream.url), "/uploads")
        publish()
        with override_settings(**ONE_SECOND):
            sock = connect(gateway.url)
            sock.sendall(
                b"POST /uploads/file HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
            )
            started = time.monotonic()
            answer = trickle(sock, b"x" * 1000, every=0.1, limit=5)  # 100 s at this pace
            elapsed = time.monotonic() - started
            sock.close()

        assert_408(answer)
        assert 0.8 <= elapsed < 3
        # The proxy stopped: the gateway closed its upstream connection mid-body.
        seen = upstream.wait_closed(timeout=3)
    head, _, body = seen.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /uploads/file ")
    assert len(body) < 1000


def test_it_lets_a_slow_but_steady_upload_through(gateway, upstream):
    make_route(make_service("uploads", upstream.url), "/uploads")
    publish()
    with override_settings(**ONE_SECOND):
        sock = connect(gateway.url)
        sock.sendall(
            b"POST /uploads/file HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4000\r\n\r\n"
        )
        for _ in range(20):  # 200 bytes every 0.1 s: 2 s, four times the minimum rate
            sock.sendall(b"y" * 200)
            time.sleep(0.1)
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        sock.close()

    assert response.status == 200
    assert [seen["body_bytes"] for seen in received(upstream)] == [4000]


def test_it_does_not_count_the_wait_between_keep_alive_requests(gateway):
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with override_settings(**ONE_SECOND):
        sock = connect(gateway.url)
        sock.sendall(request)
        first = read_response(sock)
        time.sleep(1.5)  # idle: uvicorn's keep-alive timeout (5 s), not the head deadline
        sock.sendall(request[:20])
        time.sleep(0.5)  # the second head's clock started with its first byte
        sock.sendall(request[20:])
        second = read_response(sock)
        sock.close()

    assert (first, second) == (200, 200)


def read_response(sock: socket.socket) -> int:
    """The status of one whole answer read from a kept-alive connection."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    assert not response.will_close
    return response.status


@dataclass
class RawUpstream:
    """A listening socket that records the bytes of one connection until the gateway closes it,
    and never answers."""

    url: str
    data: bytearray = field(default_factory=bytearray)
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
        except OSError:  # nothing came (the test failed earlier)
            return
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
