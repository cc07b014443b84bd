"""Size limits at the edge: URL (414), headers (431), body (413, global and per route), each
answered in the gateway's JSON shape and with nothing complete reaching the upstream; the
gateway's own paths (/auth/, /admin/) included."""

from __future__ import annotations

import json
import os
import socket
import time

import httpx
import pytest
from django.test import override_settings

from tests.conftest import make_route, make_service, publish, received
from tests.gateway_site.wire import connect, exchange, raw_upstream, read_answers, read_to_close
from tests.servers import import_settings

pytestmark = pytest.mark.django_db


@pytest.fixture
def echo_route(upstream):
    make_route(make_service("echo", upstream.url), "/echo")
    publish()
    return upstream


def get(path: bytes, headers: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n"


# URL


@pytest.mark.parametrize("where", ["path", "query"])
def test_it_answers_414_to_a_url_over_the_limit_and_forwards_nothing(gateway, echo_route, where):
    filler = b"a" * 9000  # the default limit is 8 KiB
    url = b"/echo/" + filler if where == "path" else b"/echo?q=" + filler

    (answer,) = exchange(gateway.url, get(url))

    answer.assert_error(414, "uri_too_long")
    assert received(echo_route) == []


def test_it_forwards_a_url_at_the_limit(gateway, echo_route):
    with override_settings(PORTIER_MAX_URL_BYTES=300):
        at_limit = b"/echo/" + b"a" * 294
        (ok,) = exchange(gateway.url, get(at_limit))
        (refused,) = exchange(gateway.url, get(at_limit + b"a"))

    assert ok.status == 200
    refused.assert_error(414, "uri_too_long")
    assert [seen["path"] for seen in received(echo_route)] == [at_limit.decode()]


def test_it_answers_414_on_the_gateway_own_paths_too(gateway):
    (answer,) = exchange(gateway.url, get(b"/health?" + b"a" * 9000))

    answer.assert_error(414, "uri_too_long")


# Headers


@pytest.mark.parametrize(
    "headers",
    [
        b"".join(b"X-H%d: 1\r\n" % i for i in range(100)),  # 101 with Host (limit 100)
        b"X-Big: " + b"b" * 33 * 1024 + b"\r\n",  # one header over 32 KiB
        b"".join(b"X-H%d: %s\r\n" % (i, b"c" * 1000) for i in range(40)),  # 40 KiB in all
    ],
    ids=["count", "one-large", "total"],
)
def test_it_answers_431_to_headers_over_the_defaults_and_forwards_nothing(
    gateway, echo_route, headers
):
    (answer,) = exchange(gateway.url, get(b"/echo", headers))

    answer.assert_error(431, "headers_too_large")
    assert received(echo_route) == []


def test_it_forwards_headers_within_the_defaults(gateway, echo_route):
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"c" * 300) for i in range(90))  # 27 KiB

    (answer,) = exchange(gateway.url, get(b"/echo", headers))

    assert answer.status == 200
    assert len(received(echo_route)) == 1


def test_the_header_limits_are_settings(gateway, echo_route):
    with override_settings(PORTIER_MAX_HEADER_COUNT=5, PORTIER_MAX_HEADER_BYTES=200):
        (few,) = exchange(gateway.url, get(b"/echo", b"X-A: 1\r\nX-B: 2\r\n"))  # 4 with Host
        (many,) = exchange(gateway.url, get(b"/echo", b"X-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\n"))
        (large,) = exchange(gateway.url, get(b"/echo", b"X-A: " + b"a" * 200 + b"\r\n"))

    assert few.status == 200
    many.assert_error(431, "headers_too_large")
    large.assert_error(431, "headers_too_large")
    assert len(received(echo_route)) == 1


def test_it_cuts_a_header_line_that_never_ends(gateway, echo_route):
    """httptools holds an unfinished line whole: it is refused once it passes the limits,
    not when (if ever) it ends."""
    sock = connect(gateway.url)
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    answer = b""
    for _ in range(200):  # 200 x 1 KiB: far past the 8 KiB URL + 32 KiB headers
        try:
            sock.sendall(b"e" * 1024)
        except (BrokenPipeError, ConnectionResetError):
            break
    answer = read_to_close(sock)
    sock.close()

    (refused,) = read_answers(answer)
    refused.assert_error(431, "headers_too_large")
    assert received(echo_route) == []


# Body: proxied paths


def test_it_answers_413_from_content_length_before_reading_the_body(gateway, echo_route):
    with connect(gateway.url) as sock:
        # Only the head: the answer must come without a byte of the 20 MiB body.
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (20 * 1024 * 1024)
        )
        (answer,) = read_answers(read_to_close(sock))

    answer.assert_error(413, "payload_too_large")
    assert answer.header("connection") == "close"
    assert received(echo_route) == []


def test_a_client_sending_its_whole_oversized_body_still_reads_the_413(gateway, echo_route):
    """The gateway lingers: the body it will not read does not turn its answer into a reset."""
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        response = client.post("/echo", content=b"z" * (11 * 1024 * 1024))

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert received(echo_route) == []


def test_a_route_sets_its_own_body_limit(gateway, upstream):
    make_route(make_service("small", upstream.url), "/small", max_body_bytes=1000)
    make_route(make_service("large", upstream.url), "/large", max_body_bytes=5000)
    publish()

    def post(path: bytes, size: int):
        (answer,) = exchange(
            gateway.url,
            b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
            % (path, size)
            + b"b" * size,
        )
        return answer

    with override_settings(PORTIER_MAX_BODY_BYTES=2000):
        small_ok, small_over = post(b"/small", 1000), post(b"/small", 1001)
        large_ok, large_over = post(b"/large", 5000), post(b"/large", 5001)

    assert (small_ok.status, large_ok.status) == (200, 200)
    small_over.assert_error(413, "payload_too_large")
    large_over.assert_error(413, "payload_too_large")
    assert [(seen["path"], seen["body_bytes"]) for seen in received(upstream)] == [
        ("/small", 1000),
        ("/large", 5000),
    ]


def test_a_route_without_its_own_limit_uses_the_global_one(gateway, echo_route):
    with override_settings(PORTIER_MAX_BODY_BYTES=2000):
        (answer,) = exchange(
            gateway.url,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2001\r\n\r\n" + b"b" * 2001,
        )

    answer.assert_error(413, "payload_too_large")
    assert received(echo_route) == []


def chunks_until_answered(sock: socket.socket, size: int, most: int) -> bytes:
    """Send `size`-byte chunks until the gateway answers (at most `most` bytes); the answer."""
    sock.setblocking(False)
    sent = 0
    answer = b""
    while sent < most:
        try:
            answer += sock.recv(65536)
            if answer:
                break
        except BlockingIOError:
            pass
        try:
            sock.send(b"%x\r\n" % size + b"c" * size + b"\r\n")
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            time.sleep(0.01)
            continue
        sent += size
    sock.setblocking(True)
    return answer + read_to_close(sock)


def test_a_buffered_chunked_body_over_the_limit_is_refused_before_the_upstream_is_called(
    gateway, upstream
):
    make_route(make_service("echo", upstream.url), "/echo", max_body_bytes=100_000)
    publish()

    with connect(gateway.url) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        (answer,) = read_answers(chunks_until_answered(sock, 10_000, most=5_000_000))

    answer.assert_error(413, "payload_too_large")
    assert answer.header("connection") == "close"
    assert received(upstream) == []


@pytest.fixture
def streaming_route_to_raw_upstream(gateway):
    with raw_upstream() as upstream:
        make_route(
            make_service("uploads", upstream.url),
            "/uploads",
            stream_uploads=True,
            max_body_bytes=100_000,
        )
        publish()
        yield upstream


def test_a_streamed_chunked_body_over_the_limit_never_reaches_the_upstream_whole(
    gateway, streaming_route_to_raw_upstream
):
    """Streamed (stream_uploads): whatever of the body went out, its end never did."""
    upstream = streaming_route_to_raw_upstream
    with connect(gateway.url) as sock:
        sock.sendall(b"POST /uploads HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        (answer,) = read_answers(chunks_until_answered(sock, 10_000, most=5_000_000))

    answer.assert_error(413, "payload_too_large")
    seen = upstream.wait_closed(timeout=5)
    assert upstream.accepted.is_set()  # streaming: the upstream was called at once
    body = seen.partition(b"\r\n\r\n")[2]
    assert b"0\r\n\r\n" not in body  # the last chunk never went out
    assert len(body) <= 120_000


# Body: the gateway's own paths


def test_a_large_body_to_auth_token_gets_a_json_413(gateway):
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        response = client.post(
            "/auth/token",
            content=json.dumps({"username": "u", "password": "p" * 5_000_000}),
            headers={"content-type": "application/json"},
        )

    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert response.headers["x-request-id"] == error["request_id"]


def test_a_chunked_body_to_the_gateway_own_paths_is_cut_at_the_limit(gateway):
    with connect(gateway.url) as sock:
        sock.sendall(
            b"POST /auth/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n"
        )
        (answer,) = read_answers(chunks_until_answered(sock, 65_536, most=20_000_000))

    answer.assert_error(413, "payload_too_large")


def test_the_gateway_own_paths_take_bodies_within_their_limit(gateway):
    """A small body still reaches Django (which answers its own, JSON, error)."""
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        response = client.post("/auth/token", json={"username": "nobody", "password": "x"})

    assert response.status_code in (400, 401)
    assert "error" in response.json()


# Settings


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORTIER_MAX_URL_BYTES", "lots"),
        ("PORTIER_MAX_HEADER_COUNT", "0"),
        ("PORTIER_MAX_HEADER_BYTES", "-1"),
        ("PORTIER_MAX_BODY_BYTES", "0"),
        ("PORTIER_CHUNKED_BUFFER_BYTES", "-5"),
    ],
)
def test_a_bad_limit_setting_stops_the_gateway_from_starting(name, value):
    result = import_settings({**os.environ, name: value})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr
