"""Composite routes end to end: one request to the gateway, several services called with the
caller's identity, their JSON merged into one answer; a slow or failing backend leaves a partial
answer that says so, and only when every backend fails is it 502."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest

from routing.models import Service
from tests.conftest import make_route, make_service, publish
from tests.routing.proxy.test_identity import bearer, policy, token
from tests.servers import ServerThread

pytestmark = pytest.mark.django_db(transaction=True)


class JsonUpstream:
    """Answers JSON by path, records what each request carried (path, query, headers)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.slow_seconds = 3.0
        self.big_bytes = 5000

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        path = scope["path"]
        query = scope["query_string"].decode()
        headers = [(n.decode(), v.decode()) for n, v in scope["headers"]]
        self.received.append(
            {"path": path, "raw_path": scope["raw_path"], "query": query, "headers": headers}
        )
        status, body = 200, self.answer(path, parse_qs(query))
        if path == "/slow":
            await asyncio.sleep(self.slow_seconds)
        if path == "/fail":
            status = 500
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def answer(self, path: str, query: dict[str, list[str]]) -> Any:
        if path.startswith("/users/"):
            user = path.removeprefix("/users/")
            return {"id": f"u-{user}", "name": "Ana", "email": "ana@example.com"}
        if path == "/orders":
            user = query.get("user", [""])[0]
            return [
                {"id": 1, "total": 30, "user": user, "card": "4111"},
                {"id": 2, "total": 12, "user": user, "card": "4111"},
            ]
        if path == "/profile":
            return {"plan": "pro", "theme": "dark"}
        if path == "/big":
            return {"blob": "x" * self.big_bytes}
        return {"path": path}

    def paths(self) -> list[str]:
        return [r["path"] + (f"?{r['query']}" if r["query"] else "") for r in self.received]


@pytest.fixture(scope="module")
def _json_server() -> Iterator[ServerThread]:
    server = ServerThread(JsonUpstream()).start()
    yield server
    server.stop()


@pytest.fixture
def backend(_json_server: ServerThread) -> JsonUpstream:
    app = _json_server.server.config.app
    app.__init__()
    app.url = _json_server.url
    return app


def composite(
    backend: JsonUpstream, backends: list[dict[str, Any]], path: str = "/dashboard", **fields: Any
) -> None:
    """A composite route (/dashboard) over services named as the backends use them, each
    served by the recording upstream."""
    services = {
        name: make_service(name, backend.url)
        for name in {"home"} | {b["service"] for b in backends}
    }
    make_route(services["home"], path, name="dashboard", backends=backends, **fields)
    publish()


def test_it_merges_three_backends_under_keys_at_the_top_level_and_with_an_allow_list(
    client, backend
):
    composite(
        backend,
        [
            {"service": "users", "path": "/users/7", "key": "user"},
            {"service": "profile", "path": "/profile"},
            {
                "service": "orders",
                "path": "/orders?user=7",
                "key": "orders",
                "fields": ["id", "total"],
            },
        ],
    )

    answer = client.get("/dashboard")

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert "x-portier-partial" not in answer.headers
    assert answer.json() == {
        "user": {"id": "u-7", "name": "Ana", "email": "ana@example.com"},
        "plan": "pro",
        "theme": "dark",
        "orders": [{"id": 1, "total": 30}, {"id": 2, "total": 12}],
    }
    assert sorted(backend.paths()) == ["/orders?user=7", "/profile", "/users/7"]


def test_a_backend_slower_than_its_timeout_leaves_a_partial_answer_that_says_so(client, backend):
    composite(
        backend,
        [
            {"service": "users", "path": "/users/7", "key": "user"},
            {"service": "late", "path": "/slow", "key": "late", "timeout": 0.5},
            {"service": "profile", "path": "/profile"},
        ],
    )

    started = time.monotonic()
    answer = client.get("/dashboard")

    assert time.monotonic() - started < backend.slow_seconds  # nobody waited for the slow one
    assert answer.status_code == 200
    assert answer.headers["x-portier-partial"] == "true"
    assert answer.headers["x-portier-failed"] == "late"
    assert answer.json() == {
        "user": {"id": "u-7", "name": "Ana", "email": "ana@example.com"},
        "plan": "pro",
        "theme": "dark",
    }


def test_when_every_backend_fails_it_is_a_502_naming_them(client, backend):
    composite(
        backend,
        [
            {"service": "users", "path": "/fail", "key": "user"},
            {"service": "late", "path": "/slow", "timeout": 0.3},
        ],
    )

    answer = client.get("/dashboard")

    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "upstream_error"
    assert answer.headers["x-portier-failed"] == "user, late"


def test_a_later_backend_calls_with_a_field_of_an_earlier_ones_answer(client, backend):
    composite(
        backend,
        [
            {"service": "users", "path": "/users/$user_id", "key": "user"},
            {"service": "orders", "path": "/orders?user={user.id}", "key": "orders"},
        ],
        role_policy=policy("authenticated"),
    )

    answer = client.get("/dashboard", headers=bearer(token(user_id=7)))

    assert answer.status_code == 200, answer.text
    # The second call waited for the first: its query carries the id the users service gave.
    assert backend.paths() == ["/users/7", "/orders?user=u-7"]
    assert answer.json()["orders"][0]["user"] == "u-7"


def test_a_failed_first_step_fails_the_step_that_needs_it_without_calling_it(client, backend):
    composite(
        backend,
        [
            {"service": "users", "path": "/fail", "key": "user"},
            {"service": "orders", "path": "/orders?user={user.id}", "key": "orders"},
            {"service": "profile", "path": "/profile"},
        ],
    )

    answer = client.get("/dashboard")

    assert answer.status_code == 200
    assert answer.headers["x-portier-failed"] == "user, orders"
    assert answer.json() == {"plan": "pro", "theme": "dark"}
    assert sorted(backend.paths()) == ["/fail", "/profile"]


def test_every_backend_gets_the_callers_identity_and_never_the_clients_own(client, backend):
    composite(
        backend,
        [
            {"service": "users", "path": "/users/$user_id", "key": "user"},
            {"service": "profile", "path": "/profile?email=$email", "key": "profile"},
            {"service": "orders", "path": "/orders", "key": "orders"},
        ],
        role_policy=policy("authenticated"),
    )

    answer = client.get(
        "/dashboard",
        headers={
            **bearer(token(user_id=7)),
            "X-User-Id": "999",
            "X-Request-ID": "req-composite-1",
            "Accept-Encoding": "gzip",
        },
    )

    assert answer.status_code == 200, answer.text
    assert len(backend.received) == 3
    for request in backend.received:
        names = [name for name, _ in request["headers"]]
        values = dict(request["headers"])
        assert names.count("x-user-id") == 1
        assert values["x-user-id"] == "7"
        assert values["x-user-email"] == "ana@example.com"
        assert values["x-request-id"] == "req-composite-1"
        assert values["accept"] == "application/json"
        assert "accept-encoding" not in values  # the answer is read here, so never compressed
    assert "/profile?email=ana%40example.com" in backend.paths()


def test_an_answer_past_the_size_cap_is_that_backends_failure(client, backend, settings):
    settings.PORTIER_COMPOSITE_MAX_BYTES = 1000
    composite(
        backend,
        [
            {"service": "users", "path": "/users/7", "key": "user"},
            {"service": "big", "path": "/big", "key": "big"},
        ],
    )

    answer = client.get("/dashboard")

    assert answer.status_code == 200
    assert answer.headers["x-portier-failed"] == "big"
    assert list(answer.json()) == ["user"]


def test_it_answers_only_get_and_head(client, backend):
    composite(backend, [{"service": "profile", "path": "/profile"}])

    posted = client.post("/dashboard", json={})
    head = client.head("/dashboard")

    assert posted.status_code == 405
    assert posted.headers["allow"] == "GET, HEAD"
    assert head.status_code == 200
    assert head.content == b""
    assert backend.paths() == ["/profile"]  # the POST called nobody


def test_values_from_the_request_are_percent_encoded_where_they_land(client, backend):
    composite(
        backend,
        [
            {"service": "users", "path": "/users/$path.id", "key": "user"},
            {"service": "orders", "path": "/orders?user=$path.id&kind=open", "key": "orders"},
        ],
        path=r"^/dashboard/(?P<id>[^/]+)$",
        match_type="regex",
    )

    answer = client.get("/dashboard/a%3Fb%26kind=all")

    assert answer.status_code == 200, answer.text
    raw = sorted(r["raw_path"] for r in backend.received)
    queries = [r["query"] for r in backend.received if r["path"] == "/orders"]
    assert raw[1] == b"/users/a%3Fb%26kind%3Dall"
    assert parse_qs(queries[0]) == {"user": ["a?b&kind=all"], "kind": ["open"]}


def test_a_refusing_backend_is_tried_once_and_does_not_trip_its_circuit(client, backend, dead_url):
    # The default breaker opens after 5 failures: one composite request must not cause them.
    composite(
        backend,
        [
            {"service": "gone", "path": "/x", "key": "gone"},
            {"service": "users", "path": "/users/7", "key": "user"},
        ],
    )
    gone = Service.objects.get(name="gone")
    gone.targets.update(url=dead_url)
    make_route(gone, "/gone", name="gone")
    publish()

    partial = client.get("/dashboard")
    plain = client.get("/gone")

    assert partial.status_code == 200
    assert partial.headers["x-portier-failed"] == "gone"
    # Refused, not "no healthy target": the circuit is still closed after that request.
    assert plain.status_code == 502
    assert plain.json()["error"]["code"] == "upstream_unavailable"
