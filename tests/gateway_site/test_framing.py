"""HTTP/1.1 framing at the edge (gateway_site.protocol), seen from a raw socket: what httptools
lets through or answers badly is refused in the gateway's JSON shape, and never forwarded."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from routing.proxy.stages.framing import check_framing
from tests.conftest import make_route, make_service, publish, received
from tests.gateway_site.wire import exchange
from tests.servers import gunicorn_gateway

pytestmark = pytest.mark.django_db


@pytest.fixture
def echo_route(upstream):
    make_route(make_service("echo", upstream.url), "/echo")
    publish()
    return upstream


@pytest.mark.parametrize(
    "hosts",
    [
        b"Host: x\r\nHost: x\r\n",  # the same twice
        b"Host: x\r\nHost: internal.example\r\n",  # two different hosts
        b"",  # none, on HTTP/1.1
    ],
    ids=["same-twice", "two-hosts", "none"],
)
@pytest.mark.parametrize("method", [b"GET", b"POST"])
def test_it_refuses_a_request_without_exactly_one_host(gateway, echo_route, hosts, method):
    body = b"abc" if method == b"POST" else b""
    length = b"Content-Length: 3\r\n" if body else b""

    (answer,) = exchange(
        gateway.url, method + b" /echo HTTP/1.1\r\n" + hosts + length + b"\r\n" + body
    )

    answer.assert_error(400, "bad_request")
    assert answer.header("connection") == "close"
    assert received(echo_route) == []


def test_it_still_serves_http_1_0_without_a_host(gateway, echo_route):
    (answer,) = exchange(gateway.url, b"GET /echo/old HTTP/1.0\r\n\r\n")

    assert answer.status == 200
    assert [seen["path"] for seen in received(echo_route)] == ["/echo/old"]


def test_a_refusal_echoes_the_client_request_id(gateway, echo_route):
    (answer,) = exchange(
        gateway.url, b"GET /echo HTTP/1.1\r\nX-Request-ID: edge-42\r\nHost: x\r\nHost: y\r\n\r\n"
    )

    answer.assert_error(400, "bad_request")
    assert answer.header("x-request-id") == "edge-42"


def test_it_refuses_two_hosts_on_the_gateway_own_paths_too(gateway):
    (answer,) = exchange(gateway.url, b"GET /health HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")

    answer.assert_error(400, "bad_request")


@pytest.mark.parametrize(
    "coding",
    [
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: xchunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked, gzip\r\n",
    ],
)
def test_it_refuses_transfer_codings_other_than_one_chunked(gateway, echo_route, coding):
    (answer,) = exchange(
        gateway.url,
        b"POST /echo HTTP/1.1\r\nHost: x\r\n" + coding + b"\r\n3\r\nabc\r\n0\r\n\r\n",
    )

    answer.assert_error(501, "unsupported_transfer_encoding")
    assert received(echo_route) == []


def test_it_still_forwards_a_plain_chunked_body(gateway, echo_route):
    (answer,) = exchange(
        gateway.url,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n"
        b"\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )

    assert answer.status == 200
    assert [seen["body"] for seen in received(echo_route)] == ["abcde"]


@pytest.mark.parametrize(
    "line", [b"GET /echo\r\n\r\n", b"GET /echo\r\nHost: x\r\n\r\n"], ids=["bare", "with-headers"]
)
def test_it_refuses_a_request_line_without_a_version(gateway, echo_route, line):
    (answer,) = exchange(gateway.url, line)

    answer.assert_error(400, "bad_request")
    assert received(echo_route) == []


@pytest.mark.parametrize(
    "size",
    [
        b"10000000000000000",  # 2**64: one past what 64 bits hold
        b"fffffffffffffffffffffffffffffffff",  # 132 bits
        b"0000000000000000000000000000000000000001ffffffffffffffff",  # leading zeros
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "stream_uploads"])
def test_it_refuses_chunk_sizes_past_64_bits(gateway, upstream, size, stream):
    make_route(make_service("echo", upstream.url), "/echo", stream_uploads=stream)
    publish()

    (answer,) = exchange(
        gateway.url,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + size
        + b"\r\nabc\r\n0\r\n\r\n",
    )

    answer.assert_error(400, "bad_request")
    assert all(seen["body_bytes"] < 3 for seen in received(upstream))
    if not stream:  # buffered: the upstream was never called
        assert received(upstream) == []


@pytest.mark.parametrize(
    "garbage",
    [b"\x01\x02garbage\r\n\r\n", b"GET /echo HTTP/1.1\r\nHost x\r\n\r\n", b"GET /e cho ho\r\n\r\n"],
    ids=["binary", "bad-header", "bad-request-line"],
)
def test_it_answers_a_valid_request_then_400_for_the_bytes_after_it(gateway, echo_route, garbage):
    answers = exchange(gateway.url, b"GET /echo/one HTTP/1.1\r\nHost: x\r\n\r\n" + garbage)

    assert [answer.status for answer in answers] == [200, 400]
    assert answers[0].json()["path"] == "/echo/one"
    answers[1].assert_error(400, "bad_request")
    assert answers[1].header("connection") == "close"
    assert [seen["path"] for seen in received(echo_route)] == ["/echo/one"]


def test_it_answers_every_pipelined_request_before_the_400(gateway, echo_route):
    answers = exchange(
        gateway.url,
        b"GET /echo/one HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo/two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"\x00\x00",
    )

    assert [answer.status for answer in answers] == [200, 200, 400]
    assert [answer.json()["path"] for answer in answers[:2]] == ["/echo/one", "/echo/two"]
    answers[2].assert_error(400, "bad_request")
    assert [seen["path"] for seen in received(echo_route)] == ["/echo/one", "/echo/two"]


def test_a_refusal_logs_no_header_value(gateway, echo_route, caplog):
    caplog.set_level(logging.INFO)

    (answer,) = exchange(
        gateway.url,
        b"GET /echo HTTP/1.1\r\nHost: x\r\nHost: y\r\nAuthorization: Bearer s3cr3t-t0ken\r\n\r\n",
    )

    answer.assert_error(400, "bad_request")
    assert "s3cr3t" not in caplog.text
    assert any("400 bad_request" in record.getMessage() for record in caplog.records)


def test_the_framing_stage_holds_the_same_line_for_django_own_handler():
    """The Django entry (test client, runserver) sees no protocol: the stage refuses alike."""
    from routing.config.spec import EMPTY
    from routing.proxy.context import GatewayError, RequestContext

    def context(headers):
        return RequestContext(
            method="POST",
            scheme="http",
            raw_path=b"/echo",
            query_string=b"",
            headers=headers,
            client_ip="127.0.0.1",
            receive_body=None,
            has_body=True,
            snapshot=EMPTY,
        )

    refused = {}
    for name, headers in {
        "hosts": [(b"host", b"x"), (b"host", b"y")],
        "gzip": [(b"host", b"x"), (b"transfer-encoding", b"gzip, chunked")],
        "twice": [(b"host", b"x"), *[(b"transfer-encoding", b"chunked")] * 2],
    }.items():
        with pytest.raises(GatewayError) as caught:
            asyncio.run(check_framing(context(headers)))
        refused[name] = (caught.value.status, caught.value.code)
    asyncio.run(check_framing(context([(b"host", b"x"), (b"transfer-encoding", b"chunked")])))

    assert refused == {
        "hosts": (400, "bad_request"),
        "gzip": (501, "unsupported_transfer_encoding"),
        "twice": (501, "unsupported_transfer_encoding"),
    }


def test_the_production_server_refuses_alike(upstream):
    """`portier serve` (gunicorn, uvloop) runs the same protocol as the tests' gateway."""
    make_route(make_service("echo", upstream.url), "/echo")
    publish()
    with gunicorn_gateway(PORTIER_MAX_BODY_BYTES="1000") as served:
        with httpx.Client(base_url=served.url, timeout=10) as http:
            assert wait_for(lambda: http.get("/echo").status_code == 200)
            too_large = http.post("/echo", content=b"b" * 5000)
        (two_hosts,) = exchange(served.url, b"GET /echo HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
        (gzip,) = exchange(
            served.url,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
        )
        pipelined = exchange(served.url, b"GET /echo/one HTTP/1.1\r\nHost: x\r\n\r\n\x01\x02")

    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "payload_too_large"
    two_hosts.assert_error(400, "bad_request")
    gzip.assert_error(501, "unsupported_transfer_encoding")
    assert [answer.status for answer in pipelined] == [200, 400]
    pipelined[1].assert_error(400, "bad_request")
    assert [seen["path"] for seen in received(upstream)][1:] == ["/echo/one"]


def wait_for(check, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False
