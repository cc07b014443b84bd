"""Fixtures for the edge tests (test_edge_*.py): the gateway-wide defaults row, and a small
upstream that answers with whatever headers and body a path asks for."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from routing.models import GatewayDefaults
from tests.conftest import publish
from tests.servers import ServerThread


@pytest.fixture
def gateway_defaults() -> Iterator[Callable[..., None]]:
    """Set the gateway-wide edge settings and publish them; reset (and republish) afterwards."""

    def set_defaults(**values: Any) -> None:
        GatewayDefaults.objects.update_or_create(pk=1, defaults=values)
        publish()

    yield set_defaults
    GatewayDefaults.objects.filter(pk=1).delete()
    publish()


class HeadersUpstream:
    """An ASGI app answering every request with the headers and body registered for its path
    (`answers[path] = (status, headers, body)`), 200 with a small JSON body otherwise."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]] = {}
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        self.calls += 1
        status, headers, body = self.answers.get(
            scope["path"], (200, [(b"content-type", b"application/json")], b'{"ok": true}')
        )
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def _headers_server() -> Iterator[ServerThread]:
    server = ServerThread(HeadersUpstream()).start()
    yield server
    server.stop()


@pytest.fixture
def headers_upstream(_headers_server: ServerThread) -> ServerThread:
    app = _headers_server.app
    app.answers.clear()
    app.calls = 0
    return _headers_server


@pytest.fixture(scope="module")
def _cache_server() -> Iterator[ServerThread]:
    from tests.routing.proxy.cache_upstream import CacheUpstream

    server = ServerThread(CacheUpstream()).start()
    yield server
    server.stop()


@pytest.fixture
def cache_upstream(_cache_server: ServerThread) -> ServerThread:
    """The response cache tests' upstream (tests.routing.proxy.cache_upstream), reset, with no
    cache entry left from an earlier test (ids of rolled-back routes come back)."""
    from django.core.cache import cache

    _cache_server.app.reset()
    cache.delete_pattern("rc:*")
    return _cache_server
