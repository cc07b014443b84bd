"""The real servers in their own processes: the production one (`portier serve`: gunicorn and
uvicorn workers, PORTIER_ENV=production) and `python -m gateway_site.serve`.

SIGTERM lets a stream in flight finish byte for byte, refuses new connections, runs lifespan
shutdown (which writes the traffic counts: the health monitor, which otherwise writes them, is
set to wait a minute here) and exits 0; a stream that outlasts PORTIER_GRACEFUL_TIMEOUT is cut
so the process still ends on time, by itself. Workers are recycled after max_requests without
failing a request, and the admin's static files are served with no collectstatic.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from django.db import connections

from routing import dataplane
from routing.observe import traffic_stats
from tests.conftest import make_route, make_service, publish
from tests.servers import ServerThread, gunicorn_gateway, uvicorn_gateway

pytestmark = pytest.mark.django_db(transaction=True)

INTERVAL = 0.1  # seconds between two chunks of the slow upstream
# Only shutdown writes the traffic counts: the monitor's first tick comes before any request.
QUIET_MONITOR = {"PORTIER_HEALTH_SYNC_INTERVAL": "60"}


def chunk(i: int) -> bytes:
    return b"chunk %03d " % i + b"x" * 1000 + b"\n"


def whole(chunks: int) -> bytes:
    return b"".join(chunk(i) for i in range(chunks))


class SlowStream:
    """An upstream streaming `?chunks=N` numbered chunks INTERVAL apart, with no length (chunked
    encoding); it stops when the client goes."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        chunks = int(parse_qs(scope["query_string"].decode()).get("chunks", ["20"])[0])
        while (await receive()).get("more_body"):
            pass
        gone = asyncio.ensure_future(receive())  # http.disconnect
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            for i in range(chunks):
                if gone.done():
                    return
                await send({"type": "http.response.body", "body": chunk(i), "more_body": True})
                await asyncio.sleep(INTERVAL)
            await send({"type": "http.response.body", "body": b""})
        finally:
            gone.cancel()


class StreamReader(threading.Thread):
    """Reads one streamed answer in the background: what arrived, and the error that ended it."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.body = bytearray()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=30) as response:
                response.raise_for_status()
                for part in response.iter_raw():
                    self.body += part
        except httpx.HTTPError as exc:
            self.error = exc

    def wait_for(self, size: int) -> None:
        deadline = time.monotonic() + 20
        while len(self.body) < size:
            assert self.is_alive(), f"the stream ended early: {self.error!r}"
            assert time.monotonic() < deadline, "the stream did not start"
            time.sleep(0.01)

    def result(self) -> bytes:
        self.join(timeout=30)
        assert not self.is_alive()
        return bytes(self.body)


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[ServerThread]:
    server = ServerThread(SlowStream()).start()
    yield server
    server.stop()


@pytest.fixture
def slow_route(slow_upstream: ServerThread) -> str:
    """A route to the slow upstream with a name of its own: its traffic count starts at 0."""
    name = f"slow-{uuid.uuid4().hex[:12]}"
    make_route(make_service(name, slow_upstream.url), "/slow", name=name)
    publish()
    return name


def counted(route: str) -> int:
    """Requests of the route in the cache's traffic counts (every process's, summed)."""
    rows = traffic_stats.summary(routes=[route]).routes
    return sum(row.requests for row in rows if row.route == route)


def stop(process: Any) -> float:
    """SIGTERM, as docker stop and Kubernetes send it; returns when it was sent."""
    process.send_signal(signal.SIGTERM)
    return time.monotonic()


def assert_not_served(url: str) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)


@pytest.mark.parametrize("launch", [gunicorn_gateway, uvicorn_gateway], ids=["gunicorn", "serve"])
def test_it_finishes_a_stream_in_flight_and_exits_when_terminated(launch, slow_route):
    with launch(PORTIER_GRACEFUL_TIMEOUT="10", **QUIET_MONITOR) as gateway:
        reader = StreamReader(gateway.url + "/slow?chunks=20")
        reader.start()
        reader.wait_for(len(whole(3)))

        sent = stop(gateway.process)
        time.sleep(0.5)
        assert_not_served(gateway.url)
        body = reader.result()
        code = gateway.process.wait(timeout=15)
        took = time.monotonic() - sent

        assert reader.error is None
        assert body == whole(20)
        assert code == 0, gateway.output()[-3000:]
        assert took < 10  # the stream's own end (~1.7 s) and shutdown, not the deadline
        assert counted(slow_route) == 1  # lifespan shutdown ran, after the stream


def test_it_cuts_a_stream_that_outlasts_the_graceful_timeout(slow_route):
    with gunicorn_gateway(PORTIER_GRACEFUL_TIMEOUT="2", **QUIET_MONITOR) as gateway:
        assert httpx.get(gateway.url + "/slow?chunks=1", timeout=10).content == whole(1)
        reader = StreamReader(gateway.url + "/slow?chunks=100")  # 10 s
        reader.start()
        reader.wait_for(len(whole(3)))

        sent = stop(gateway.process)
        code = gateway.process.wait(timeout=15)
        took = time.monotonic() - sent
        body = reader.result()
        output = gateway.output()

        assert code == 0, output[-3000:]
        # Cut when drain_seconds(2) = 1 s is up, then lifespan shutdown: long before the 10 s.
        assert 0.9 < took < 4
        assert isinstance(reader.error, httpx.RemoteProtocolError)
        assert whole(3) in body
        assert len(body) < len(whole(100))
        # The worker ended by itself within the deadline, after lifespan shutdown (which wrote
        # the first request's count): not killed by the master at the deadline, as a stock
        # uvicorn-worker is, its drain unbounded.
        assert counted(slow_route) >= 1


def test_it_recycles_a_worker_after_max_requests_without_failing_a_request(slow_route):
    env = {"PORTIER_MAX_REQUESTS": "3", "PORTIER_MAX_REQUESTS_JITTER": "0"}
    with gunicorn_gateway(**env) as gateway:
        answers = [
            httpx.get(gateway.url + "/slow?chunks=1", timeout=30, headers={"connection": "close"})
            for _ in range(7)
        ]
        output = gateway.output()

    assert [answer.status_code for answer in answers] == [200] * 7
    # The readiness probe and 7 requests: at least one worker was replaced (uvicorn checks the
    # count on its 0.1 s tick, so a worker may serve a request or two past the limit).
    assert output.count("Booting worker") >= 2, output[-3000:]
    assert "Maximum request limit of 3 exceeded" in output


def test_the_production_server_serves_the_admins_static_files():
    with gunicorn_gateway() as gateway:
        response = httpx.get(gateway.url + "/static/admin/css/base.css", timeout=10)

    assert response.status_code == 200
    assert "text/css" in response.headers["content-type"]


@pytest.mark.django_db(transaction=True)
def test_shutdown_releases_the_database_connections_of_every_sync_thread():
    """Django's connections are per thread: the executor's threads must end, and the connection
    each one opened with them (the driver closes a released connection)."""

    def query() -> tuple[str, weakref.ref[Any]]:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        return threading.current_thread().name, weakref.ref(connections["default"])

    async def serve_then_shut_down() -> tuple[list[str], list[Any]]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="portier-sync-test"))
        opened = [await loop.run_in_executor(None, query) for _ in range(3)]
        await dataplane.close_database_connections()
        gc.collect()
        # Looked at before asyncio.run ends, which would shut the executor down itself.
        alive = [t.name for t in threading.enumerate() if t.name.startswith("portier-sync-test")]
        return alive, [wrapper() for _, wrapper in opened]

    alive, wrappers = asyncio.run(serve_then_shut_down())

    assert alive == []
    assert wrappers == [None, None, None]


def test_a_connection_accepted_just_before_sigterm_gets_its_answer():
    with uvicorn_gateway() as gateway:
        port = int(gateway.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            time.sleep(0.3)  # accepted by the server, no request yet
            gateway.process.send_signal(signal.SIGTERM)
            time.sleep(0.2)  # the shutdown has begun: it used to close this connection here
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        gateway.process.wait(timeout=30)

    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in answer.lower()
