"""TRACE and CONNECT: answered by the gateway with 405 method_not_allowed, never proxied, unless
a route's method list names them. Sent over a raw socket: CONNECT's authority form
(`host:port`) is not something a client library sends to an origin server.

httptools cannot parse a CONNECT's authority-form target (uvicorn's URL parsing fails), so the
served gateway answers it 400 bad_request from its protocol, before the app; the match stage
answers it 405 for an entry that does hand it over (the Django entry under another server)."""

from __future__ import annotations

import asyncio

import pytest

from routing.proxy.context import GatewayError
from routing.proxy.stages.match import match
from tests.conftest import make_route, make_service, publish, received
from tests.raw_http import RawAnswer, raw_exchange
from tests.routing.proxy.test_matching import request, snapshot

pytestmark = pytest.mark.django_db

SECRET_COOKIE = "session=s3cr3t-cookie-value"


def send(url: str, method: str, target: str, *, token: bool = True) -> RawAnswer:
    """The request with a cookie and (unless `token` is False) a bearer token to be leaked."""
    head = f"{method} {target} HTTP/1.1\r\nHost: api.example.com\r\nCookie: {SECRET_COOKIE}\r\n"
    if token:
        head += "Authorization: Bearer not-a-real-token\r\n"
    return raw_exchange(url, head.encode())


def assert_refused(answer: RawAnswer, upstream) -> None:
    assert answer.status == 405
    error = answer.json()["error"]
    assert error["code"] == "method_not_allowed"
    assert error["request_id"] == answer.header("x-request-id")
    # Nothing of the request is echoed back (cross-site tracing reads cookies this way).
    assert b"s3cr3t-cookie-value" not in answer.raw
    assert b"not-a-real-token" not in answer.raw
    assert received(upstream) == []


@pytest.mark.parametrize("method", ["TRACE", "CONNECT"])
def test_a_route_for_any_method_does_not_allow_trace_or_connect(gateway, upstream, method):
    make_route(make_service("svc", upstream.url), "/p")
    publish()

    answer = send(gateway.url, method, "/p/x")

    assert_refused(answer, upstream)
    assert answer.header("allow") == "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"


@pytest.mark.parametrize("method", ["TRACE", "CONNECT"])
def test_a_route_listing_other_methods_refuses_them(gateway, upstream, method):
    make_route(make_service("svc", upstream.url), "/p", methods="GET, POST")
    publish()

    answer = send(gateway.url, method, "/p")

    assert_refused(answer, upstream)
    assert answer.header("allow") == "GET, HEAD, POST"


@pytest.mark.parametrize("target", ["api.example.com:443", "127.0.0.1:22", "[::1]:80"])
def test_a_connect_tunnel_request_is_refused_before_the_app(gateway, upstream, target):
    make_route(make_service("svc", upstream.url), "/", match_type="prefix")
    publish()

    answer = send(gateway.url, "CONNECT", target)

    assert answer.status == 400
    assert answer.json()["error"]["code"] == "bad_request"
    assert received(upstream) == []


@pytest.mark.parametrize("target", [b"api.example.com:443", b"[::1]:80", b"*"])
def test_the_match_stage_answers_a_tunnel_request_405(target):
    ctx = request(snapshot({"name": "all", "path": "/"}), target, method="CONNECT")
    with pytest.raises(GatewayError) as info:
        asyncio.run(match(ctx))

    assert (info.value.status, info.value.code) == (405, "method_not_allowed")
    assert ctx.route is None


def test_a_route_that_names_trace_forwards_it(gateway, upstream):
    make_route(make_service("svc", upstream.url), "/p", methods="GET")
    make_route(make_service("diag", upstream.url), "/diag", methods="trace")
    publish()

    answer = send(gateway.url, "TRACE", "/diag/x", token=False)
    refused = send(gateway.url, "TRACE", "/p")

    assert answer.status == 200
    assert [seen["method"] for seen in received(upstream)] == ["TRACE"]
    assert refused.status == 405


def test_a_route_for_any_method_does_not_shadow_one_that_names_trace(gateway, upstream):
    make_route(make_service("svc", upstream.url), "/p", priority=2)  # tried first
    make_route(make_service("diag", upstream.url), "/p", methods="TRACE", priority=1)
    publish()

    answer = send(gateway.url, "TRACE", "/p", token=False)
    other = send(gateway.url, "GET", "/p", token=False)

    assert (answer.status, other.status) == (200, 200)
    assert [seen["method"] for seen in received(upstream)] == ["TRACE", "GET"]
