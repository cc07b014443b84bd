"""Chunked uploads reach upstreams whole: read up to PORTIER_CHUNKED_BUFFER_BYTES and forwarded
with a Content-Length (as NGINX does), streamed only above it or on a `stream_uploads` route."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings

from tests.conftest import make_route, make_service, publish, received
from tests.gateway_site.wire import exchange, length_only_upstream

pytestmark = pytest.mark.django_db


def chunked(body: bytes, size: int = 1000) -> Iterator[bytes]:
    """httpx sends an iterator's body with Transfer-Encoding: chunked."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def upstream_header(seen: dict, name: str) -> str | None:
    return next((value for key, value in seen["headers"] if key == name), None)


def test_a_chunked_upload_reaches_a_content_length_only_upstream_whole(client):
    body = bytes(range(256)) * 200  # 51,200 bytes in 52 chunks
    with length_only_upstream() as upstream:
        make_route(make_service("simple", upstream.url), "/simple")
        publish()

        response = client.post("/simple/upload", content=chunked(body))

        assert response.status_code == 200
        assert response.json() == {"body_bytes": len(body)}
        (seen,) = upstream.received
    assert seen["body"] == body
    assert seen["content_length"] == str(len(body))
    assert seen["transfer_encoding"] is None


def test_an_empty_chunked_upload_is_sent_as_an_empty_body(gateway):
    with length_only_upstream() as upstream:
        make_route(make_service("simple", upstream.url), "/simple")
        publish()

        (answer,) = exchange(
            gateway.url,
            b"POST /simple HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n0\r\n\r\n",
        )

        assert answer.status == 200
        (seen,) = upstream.received
    assert seen["body"] == b""
    assert seen["transfer_encoding"] is None


def test_a_chunked_upload_above_the_buffer_is_streamed_whole(client, upstream):
    make_route(make_service("echo", upstream.url), "/echo")
    publish()
    body = b"s" * 5000

    with override_settings(PORTIER_CHUNKED_BUFFER_BYTES=1000):
        response = client.post("/echo", content=chunked(body, 700))

    assert response.status_code == 200
    (seen,) = received(upstream)
    assert seen["body_bytes"] == len(body)
    assert upstream_header(seen, "transfer-encoding") == "chunked"
    assert upstream_header(seen, "content-length") is None


def test_a_stream_uploads_route_streams_even_a_small_chunked_upload(client, upstream):
    make_route(make_service("echo", upstream.url), "/echo", stream_uploads=True)
    publish()

    response = client.post("/echo", content=chunked(b"tiny body", 4))

    assert response.status_code == 200
    (seen,) = received(upstream)
    assert seen["body"] == "tiny body"
    assert upstream_header(seen, "transfer-encoding") == "chunked"


def test_a_small_buffered_chunked_upload_is_retried_on_the_next_target(client, upstream, dead_url):
    """Buffered, the body can be sent again: a refused connection moves on to the live target."""
    service = make_service("echo", dead_url, upstream.url, retries=1, balancing="round_robin")
    make_route(service, "/echo", retry_unsafe_methods=True)
    publish()

    answers = [client.post("/echo", content=chunked(b"again", 2)) for _ in range(2)]

    assert [response.status_code for response in answers] == [200, 200]
    assert [seen["body"] for seen in received(upstream)] == ["again", "again"]


def test_a_content_length_upload_is_untouched(client, upstream):
    make_route(make_service("echo", upstream.url), "/echo")
    publish()

    response = client.post("/echo", content=b"x" * 3000)

    assert response.status_code == 200
    (seen,) = received(upstream)
    assert (seen["body_bytes"], upstream_header(seen, "content-length")) == (3000, "3000")
