"""/api-docs on the running gateway: clients discover the APIs behind it, as JSON or as a page,
without learning about admin-only or audited routes (unless they are admins) or any upstream
address; the path is the gateway's own and no route can take it."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from accounts.models import User
from accounts.services import api_key_issue
from routing.models import RolePolicy, Route
from tests.conftest import make_route, make_service, publish, received

# The gateway's threads read API keys from the database: test data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def bearer(*roles: str) -> dict[str, str]:
    claims = {
        "user_id": 7,
        "email": "caller@example.com",
        "roles": list(roles),
        "token_type": "access",
        "exp": int(time.time()) + 300,
    }
    raw = jwt.encode(claims, settings.PORTIER_JWT_SIGNING_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {raw}"}


def policy(name: str, kind: str, *roles: str) -> RolePolicy:
    made = RolePolicy.objects.create(name=name, kind=kind)
    made.roles.set(Group.objects.get_or_create(name=role)[0] for role in roles)
    return made


@pytest.fixture
def layout(upstream: Any) -> str:
    """Public, signed-in, role, admin-only, audited and disabled routes; `ops` is reached only
    through admin-only and audited routes. Returns the upstream's address."""
    users = make_service("users", upstream.url)
    ops = make_service("ops", upstream.url)
    make_route(users, "/api/v1/auth", name="auth", methods="POST")
    make_route(
        users,
        "/api/v1/users",
        name="users",
        methods="GET, POST",
        role_policy=policy("signed-in", "authenticated"),
    )
    make_route(
        users,
        "/api/v1/doctors",
        name="doctors",
        hosts="api.example.com",
        role_policy=policy("doctors-only", "any_of", "doctor"),
    )
    make_route(users, "/api/v1/old", name="old", enabled=False)
    make_route(ops, "/api/v1/admin", name="admin-tools", role_policy=policy("admins", "admin_only"))
    make_route(ops, r"/api/v1/exports/\d+", name="exports", match_type="regex", audit=True)
    publish()
    return upstream.url


def catalogue(client: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = client.get("/api-docs", headers=headers or {})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def routes_by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {route["name"]: route for service in body["services"] for route in service["routes"]}


def test_an_anonymous_caller_sees_the_public_apis_and_what_each_needs(client, layout):
    body = catalogue(client)

    assert [service["name"] for service in body["services"]] == ["users"]
    routes = routes_by_name(body)
    assert routes == {
        "auth": {
            "name": "auth",
            "path": "/api/v1/auth",
            "match": "prefix",
            "methods": ["POST"],
            "hosts": [],
            "token_required": False,
            "access": "public",
            "roles": [],
            "audited": False,
        },
        "doctors": {
            "name": "doctors",
            "path": "/api/v1/doctors",
            "match": "prefix",
            "methods": [],
            "hosts": ["api.example.com"],
            "token_required": True,
            "access": "any_of",
            "roles": ["doctor"],
            "audited": False,
        },
        "users": {
            "name": "users",
            "path": "/api/v1/users",
            "match": "prefix",
            "methods": ["GET", "HEAD", "POST"],  # as routed: GET brings HEAD
            "hosts": [],
            "token_required": True,
            "access": "authenticated",
            "roles": [],
            "audited": False,
        },
    }


def test_a_token_without_the_admin_role_does_not_reveal_admin_only_or_audited_routes(
    client, layout
):
    routes = routes_by_name(catalogue(client, bearer("doctor", "premium")))

    assert set(routes) == {"auth", "doctors", "users"}


def test_an_admin_token_sees_admin_only_and_audited_routes_but_never_disabled_ones(client, layout):
    body = catalogue(client, bearer(settings.PORTIER_ADMIN_ROLE))

    assert [service["name"] for service in body["services"]] == ["ops", "users"]
    routes = routes_by_name(body)
    assert set(routes) == {"auth", "doctors", "users", "admin-tools", "exports"}
    assert (routes["admin-tools"]["access"], routes["admin-tools"]["audited"]) == (
        "admin_only",
        True,
    )
    assert (routes["exports"]["match"], routes["exports"]["audited"]) == ("regex", True)


def test_an_admin_api_key_sees_admin_only_routes(client, layout):
    admin = User.objects.create_user("boss", email="boss@example.com", password="pw-9x")
    admin.groups.add(Group.objects.get_or_create(name=settings.PORTIER_ADMIN_ROLE)[0])
    _, key = api_key_issue(owner=admin, name="docs")

    assert "admin-tools" in routes_by_name(catalogue(client, {"X-API-Key": key}))


def test_no_one_sees_an_upstream_address(client, layout):
    host_and_port = layout.removeprefix("http://")

    for headers in ({}, bearer(settings.PORTIER_ADMIN_ROLE)):
        for accept in ("application/json", BROWSER_ACCEPT):
            response = client.get("/api-docs", headers=headers | {"Accept": accept})
            assert response.status_code == 200
            assert host_and_port not in response.text
            assert "127.0.0.1" not in response.text


def test_a_browser_gets_an_html_page_and_other_clients_json(client, layout):
    page = client.get("/api-docs", headers={"Accept": BROWSER_ACCEPT})
    plain = client.get("/api-docs", headers={"Accept": "*/*"})
    asked = client.get("/api-docs", headers={"Accept": "application/json, text/html;q=0.5"})

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<table>" in page.text and "/api/v1/users" in page.text
    assert "admin-tools" not in page.text
    assert "<script" not in page.text and "http" not in page.text.split("<body>")[1]
    assert "Accept" in page.headers["vary"]
    for response in (plain, asked):
        assert response.headers["content-type"].startswith("application/json")
        assert "users" in routes_by_name(response.json())


def test_a_bad_token_is_refused_with_401(client, layout):
    response = client.get("/api-docs", headers={"Authorization": "Bearer not-a-token"})
    bad_key = client.get("/api-docs", headers={"X-API-Key": "pk_nope"})

    for refused in (response, bad_key):
        assert refused.status_code == 401
        error = refused.json()["error"]
        assert error["code"] in {"invalid_token", "invalid_api_key"}
        assert error["request_id"] == refused.headers["x-request-id"]
        assert "www-authenticate" in refused.headers


def test_only_get_reads_the_catalogue(client, layout):
    response = client.post("/api-docs", json={})

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_no_route_can_take_the_catalogues_path():
    service = make_service("docs", "http://127.0.0.1:9")

    for path, match_type in (
        ("/api-docs", "prefix"),
        ("/api-docs/v2", "exact"),
        ("/api-docs", "regex"),
        ("/api-doc.*", "regex"),
    ):
        with pytest.raises(ValidationError) as refused:
            make_route(service, path, match_type=match_type)
        assert "path" in refused.value.message_dict
    assert not Route.objects.exists()


def test_the_catalogue_is_answered_by_the_gateway_even_under_a_catch_all_route(client, upstream):
    make_route(make_service("everything", upstream.url), "/", name="everything")
    publish()

    response = client.get("/api-docs")
    trailing = client.get("/api-docs/extra")

    assert response.status_code == 200
    assert [r["path"] for r in routes_by_name(response.json()).values()] == ["/"]
    assert trailing.status_code == 404
    assert trailing.json()["error"]["code"] == "not_found"
    assert received(upstream) == []
