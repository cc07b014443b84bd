"""The gateway's own endpoints, and the Django-view entry running the same pipeline as ASGI's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from routing.upstream.transport import close_clients
from tests.conftest import make_route, make_service, publish, received
from tests.servers import ServerThread

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def django_entry(django_db_setup: Any, django_db_blocker: Any) -> Iterator[ServerThread]:
    """Django's own ASGI handler alone, served by uvicorn: every path reaches the Django views.
    Its lifespan only closes this server's upstream pool: the process's config refresher is
    shared with the gateway fixture and must keep running."""
    from gateway_site.asgi import django_app

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await django_app(scope, receive, send)
            return
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await close_clients()
        await send({"type": "lifespan.shutdown.complete"})

    with django_db_blocker.unblock():
        server = ServerThread(app, lifespan="on").start()
    yield server
    server.stop()


def test_the_gateway_serves_the_admins_static_files_itself(client):
    response = client.get("/static/admin/css/base.css")

    assert response.status_code == 200
    assert "text/css" in response.headers["content-type"]
    assert b"body" in response.content


def test_it_reports_health_with_the_served_configuration(client, upstream):
    make_route(make_service("users", upstream.url), "/users")
    make_route(make_service("orders", upstream.url), "/orders")
    publish()

    response = client.get("/health")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "cache": "ok"}
    assert body["config"]["version"] >= 1
    assert body["config"]["routes"] == 2
    assert 0 <= body["config"]["age_seconds"] < 60
    assert body["config"]["skipped_routes"] == []
    assert body["config"]["refresh_error"] is None


def test_health_is_answered_by_the_gateway_even_with_a_catch_all_route(client, upstream):
    make_route(make_service("all", upstream.url), "/")
    publish()

    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/health/live").json() == {"status": "live"}
    ready = client.get("/health/ready")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    assert received(upstream) == []


@pytest.mark.parametrize(
    "path", ["/metrics/x", "/auth/x", "/auth/tokens", "/health/nope", "/static/x"]
)
def test_it_answers_unknown_gateway_paths_with_a_json_404(client, upstream, path):
    make_route(make_service("all", upstream.url), "/")
    publish()

    response = client.get(path)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"
    assert received(upstream) == []


def _through_the_django_view(path: str) -> tuple[Any, bytes]:
    """GET `path` through Django's own handler (URL resolver -> the proxy view)."""

    async def call() -> tuple[Any, bytes]:
        try:
            response = await AsyncClient().get(path, headers={"X-Request-ID": "via-django"})
            if not response.streaming:
                return response, response.content
            return response, b"".join([chunk async for chunk in response.streaming_content])
        finally:
            await close_clients()  # this event loop ends here, and its upstream pool with it

    return async_to_sync(call)()


def _set_cookie_lines(response: Any) -> list[str]:
    """The Set-Cookie lines Django's handlers write for this response."""
    return [cookie.output(header="").strip() for cookie in response.cookies.values()]


def test_the_django_view_forwards_and_keeps_every_set_cookie(upstream):
    make_route(make_service("users", upstream.url), "/", match_type="prefix")
    publish()

    response, body = _through_the_django_view("/_cookies")

    assert response.status_code == 200
    assert response.headers["x-upstream"] == "up-a"
    assert response.headers["x-request-id"] == "via-django"
    assert _set_cookie_lines(response) == ["a=1; Path=/; HttpOnly", "b=2; Path=/api; SameSite=Lax"]
    assert b'"path": "/_cookies"' in body
    assert received(upstream)[-1]["path"] == "/_cookies"


def test_the_django_view_normalises_and_refuses_paths_like_the_asgi_entry(upstream):
    make_route(make_service("users", upstream.url), "/users")
    publish()

    normalised, _ = _through_the_django_view("/other/../users/%7Eme")
    missing, missing_body = _through_the_django_view("/nothing")

    assert normalised.status_code == 200
    assert received(upstream)[-1]["path"] == "/users/~me"
    assert missing.status_code == 404
    assert b'"route_not_found"' in missing_body


def test_the_django_entry_served_over_http_sends_both_set_cookie_lines(django_entry, upstream):
    make_route(make_service("users", upstream.url), "/", match_type="prefix")
    publish()

    response = httpx.get(django_entry.url + "/_cookies", timeout=10)

    assert response.status_code == 200
    assert response.headers["x-upstream"] == "up-a"
    assert response.headers.get_list("set-cookie") == [
        "a=1; Path=/; HttpOnly",
        "b=2; Path=/api; SameSite=Lax",
    ]


def test_the_django_test_client_keeps_working_after_a_proxied_set_cookie(upstream):
    make_route(make_service("users", upstream.url), "/", match_type="prefix")
    publish()

    async def two_requests() -> int:
        django_client = AsyncClient()
        try:
            for path in ("/_cookies", "/next"):
                response = await django_client.get(path)
                [chunk async for chunk in response.streaming_content]
            return response.status_code
        finally:
            await close_clients()

    # The test client stores the answer's cookies and sends them with its next request.
    assert async_to_sync(two_requests)() == 200
    assert received(upstream)[-1]["path"] == "/next"


def test_the_django_view_served_synchronously_keeps_no_connection_per_request(upstream):
    make_route(make_service("users", upstream.url), "/", match_type="prefix")
    publish()
    open_before = len(os.listdir("/proc/self/fd"))

    answers: list[object] = []
    for _ in range(30):  # Django's sync handler, as under runserver (WSGI)
        try:
            response = Client().get("/x")
            answers.append((response.status_code, b"".join(response).count(b'"path": "/x"')))
        except RuntimeError as exc:
            answers.append(repr(exc))

    assert answers == [(200, 1)] * 30
    assert len(os.listdir("/proc/self/fd")) - open_before < 10
