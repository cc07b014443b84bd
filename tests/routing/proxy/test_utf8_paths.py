"""Paths whose bytes beyond ASCII are not strict UTF-8 are refused with 400 invalid_path and
never reach an upstream. Sent over a raw socket: a client library would re-encode them."""

from __future__ import annotations

import pytest

from routing.proxy.paths import PathRejected, normalize_path
from tests.conftest import make_route, make_service, publish, received
from tests.raw_http import raw_exchange

pytestmark = pytest.mark.django_db

INVALID = [
    pytest.param(b"/files/%c0%ae%c0%ae/admin", id="overlong-dot"),
    pytest.param(b"/files/%C0%AF", id="overlong-slash"),
    pytest.param(b"/files/%e0%80%ae", id="overlong-3-byte-dot"),
    pytest.param(b"/files/%f0%80%80%af", id="overlong-4-byte-slash"),
    pytest.param(b"/files/%80", id="lone-continuation"),
    pytest.param(b"/files/a%bfb", id="lone-continuation-inside"),
    pytest.param(b"/files/%e2%82", id="truncated-3-byte"),
    pytest.param(b"/files/%c3/x", id="truncated-2-byte-before-slash"),
    pytest.param(b"/files/%f0%9f%98", id="truncated-4-byte"),
    pytest.param(b"/files/%ed%a0%80", id="high-surrogate"),
    pytest.param(b"/files/%ED%BF%BF", id="low-surrogate"),
    pytest.param(b"/files/%f4%90%80%80", id="beyond-u10ffff"),
    pytest.param(b"/files/%ff", id="never-valid-byte"),
    pytest.param(b"/files/%e9t%e9", id="latin-1"),
]
RAW = [b"/files/\xc0\xae", b"/files/\x80x", b"/files/\xed\xa0\x80", "/files/café".encode()]


@pytest.fixture
def route(upstream):
    make_route(make_service("files", upstream.url), "/files")
    publish()


@pytest.mark.parametrize("path", INVALID)
def test_it_refuses_a_path_that_is_not_utf8_and_forwards_nothing(gateway, upstream, route, path):
    answer = raw_exchange(gateway.url, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n")

    assert answer.status == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_path"
    assert error["message"] == "The path holds bytes that are not valid UTF-8."
    assert error["request_id"] == answer.header("x-request-id")
    assert b"Traceback" not in answer.raw
    assert received(upstream) == []


@pytest.mark.parametrize(
    ("path", "forwarded"),
    [
        (b"/files/%e2%82%ac", "/files/%E2%82%AC"),
        (b"/files/caf%c3%a9", "/files/caf%C3%A9"),
        (b"/files/%f0%9f%98%80", "/files/%F0%9F%98%80"),
        (b"/files/%ef%bf%bf", "/files/%EF%BF%BF"),
    ],
)
def test_valid_utf8_still_passes_in_its_normal_form(gateway, upstream, route, path, forwarded):
    answer = raw_exchange(gateway.url, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n")

    assert answer.status == 200
    assert received(upstream)[-1]["path"] == forwarded


@pytest.mark.parametrize("path", RAW)
def test_raw_bytes_beyond_ascii_are_refused_by_the_parser(gateway, upstream, route, path):
    # httptools refuses them before the app; normalize_path would refuse invalid ones too.
    answer = raw_exchange(gateway.url, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n")

    assert answer.status == 400
    assert answer.json()["error"]["code"] == "bad_request"
    assert received(upstream) == []


@pytest.mark.parametrize("path", [p.values[0] for p in INVALID] + RAW[:3])
def test_encoded_slashes_allowed_or_not_invalid_utf8_is_refused(path):
    for allow in (False, True):
        with pytest.raises(PathRejected, match="not valid UTF-8"):
            normalize_path(path, allow_encoded_slashes=allow)
