"""What a client is told when the upstream cannot be reached: refused is 502, not accepted in
time is 504 (the README's error table), and a retry goes to the next target either way."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.conftest import make_route, make_service, publish, received

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def unaccepting_url() -> Iterator[str]:
    """A listener whose accept queue is full: the kernel drops further SYNs, so a connection
    to it is never accepted, and never refused either."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # a backlog of 0 still queues one or two; fill whatever it holds
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}"
    for sock in [*fillers, listener]:
        sock.close()


def test_an_upstream_that_never_accepts_is_a_504_upstream_timeout(client, unaccepting_url):
    service = make_service("unaccepting", unaccepting_url, connect_timeout=0.3, retries=0)
    make_route(service, "/slow-accept")
    publish()

    response = client.get("/slow-accept/x")

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


def test_an_upstream_that_refuses_is_a_502_upstream_unavailable(client, dead_url):
    service = make_service("refusing", dead_url, retries=0)
    make_route(service, "/refused")
    publish()

    response = client.get("/refused/x")

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"


def test_a_connect_timeout_is_retried_on_the_next_target(client, unaccepting_url, upstream):
    service = make_service(
        "half-accepting",
        unaccepting_url,
        upstream.url,
        connect_timeout=0.3,
        retries=1,
        balancing="round_robin",
        breaker_failures=0,
    )
    make_route(service, "/half")
    publish()

    answers = [client.get("/half/x") for _ in range(2)]

    assert [a.status_code for a in answers] == [200, 200]
    assert len(received(upstream)) == 2
