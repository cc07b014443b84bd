"""Server-sent events through the gateway: relayed event by event as the upstream writes them
(the first before the upstream has finished), never compressed or cached, and a healthy stream
is not cut by the service's read timeout (PORTIER_STREAM_IDLE_TIMEOUT bounds its silences)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import make_route, make_service, publish
from tests.servers import ServerThread

pytestmark = pytest.mark.django_db(transaction=True)


class EventsUpstream:
    """Answers text/event-stream: `events` events, `gap` seconds apart, then `stall` seconds of
    silence before the end. Records when it wrote each event and when it finished."""

    def __init__(self) -> None:
        self.events = 3
        self.gap = 0.5
        self.stall = 0.0
        self.content_type = b"text/event-stream"
        self.written: list[float] = []
        self.finished = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        self.written = []
        headers = [(b"content-type", self.content_type), (b"cache-control", b"max-age=60")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for n in range(self.events):
            if n:
                await asyncio.sleep(self.gap)
            self.written.append(time.monotonic())
            body = b"id: %d\ndata: event %d\n\n" % (n, n)
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await asyncio.sleep(self.stall)
        self.finished = time.monotonic()
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def _events_server() -> Iterator[ServerThread]:
    server = ServerThread(EventsUpstream()).start()
    yield server
    server.stop()


@pytest.fixture
def events(_events_server: ServerThread) -> EventsUpstream:
    app = _events_server.server.config.app
    app.__init__()
    app.url = _events_server.url
    return app


def received_events(client: httpx.Client, path: str, **headers: str) -> list[tuple[float, bytes]]:
    """Each event with the time it arrived at the client."""
    arrived: list[tuple[float, bytes]] = []
    with client.stream("GET", path, headers=headers) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/event-stream"
        assert "content-encoding" not in answer.headers
        buffered = b""
        for chunk in answer.iter_raw():
            buffered += chunk
            while b"\n\n" in buffered:
                event, buffered = buffered.split(b"\n\n", 1)
                arrived.append((time.monotonic(), event))
    return arrived


def test_events_arrive_one_by_one_as_the_upstream_writes_them(client, events):
    make_route(make_service("events", events.url), "/events", name="events")
    publish()

    arrived = received_events(client, "/events", **{"Accept-Encoding": "gzip, br"})

    assert [event for _, event in arrived] == [
        b"id: 0\ndata: event 0",
        b"id: 1\ndata: event 1",
        b"id: 2\ndata: event 2",
    ]
    # Each event reached the client before the upstream wrote the next one: nothing waited
    # for the stream's end, and the upstream's spacing is kept.
    for (came, _), written_next in zip(arrived, events.written[1:], strict=False):
        assert came < written_next
    assert arrived[0][0] < events.finished


def test_a_stream_quieter_than_the_read_timeout_is_not_cut(client, events):
    events.gap = 1.2  # longer than the service's read timeout, below the stream idle timeout
    service = make_service("events", events.url, read_timeout=0.5)
    make_route(service, "/events", name="events")
    publish()

    arrived = received_events(client, "/events")

    assert len(arrived) == 3


def test_a_stream_silent_past_the_idle_timeout_is_cut(client, events, settings):
    settings.PORTIER_STREAM_IDLE_TIMEOUT = 0.5
    events.events, events.stall = 1, 3.0
    make_route(make_service("events", events.url), "/events", name="events")
    publish()

    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        received_events(client, "/events")

    assert time.monotonic() - started < events.stall  # cut by the gateway, not by the end


def test_another_answer_still_obeys_the_read_timeout(client, events):
    events.content_type = b"application/json"
    events.gap = 1.2
    make_route(make_service("events", events.url, read_timeout=0.5), "/slow", name="slow")
    publish()

    with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", "/slow") as answer:
        for _ in answer.iter_raw():
            pass


def test_a_caching_route_never_stores_a_stream(client, events):
    route = make_route(make_service("events", events.url), "/events", name="events")
    route.cache = {"ttl": 60}
    route.save()
    publish()

    first = client.get("/events")
    second = client.get("/events")

    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "MISS"
    assert b"event 2" in second.content
