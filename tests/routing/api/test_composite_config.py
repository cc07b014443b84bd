"""A composite route's `backends` configured three ways: the admin, the management API and the
declarative document refuse the same malformed input with the same words, accept a good one,
and the document carries it through an export and an import unchanged."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from accounts.models import User
from routing.api.document import (
    DocumentInvalid,
    document_apply,
    document_dump,
    document_export,
    document_load,
)
from routing.config.holder import holder
from routing.models import Route, Service
from tests.conftest import make_route, make_service, publish
from tests.routing.api.test_management_api import bearer
from tests.routing.test_admin import route_form

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = [
    {"service": "users", "path": "/users/$user_id", "key": "user"},
    {
        "service": "orders",
        "path": "/orders?user={user.id}",
        "key": "orders",
        "fields": ["id", "total"],
        "timeout": 2,
    },
]
# Malformed backends, and the words every view refuses them with.
BAD = {
    "a relative path": (
        [{"service": "users", "path": "users/1"}],
        "backend 1: path: required: the path to call, starting with /.",
    ),
    "a reference to a later backend": (
        [
            {"service": "orders", "path": "/orders?user={user.id}"},
            {"service": "users", "path": "/users/1", "key": "user"},
        ],
        "backend 1: path: {user...} names no earlier backend's key",
    ),
    "an unknown key": (
        [{"service": "users", "path": "/u", "retries": 3}],
        "backend 1: retries: unknown key; use service, path, key, fields, timeout.",
    ),
    "a zero timeout": (
        [{"service": "users", "path": "/u", "timeout": 0}],
        "backend 1: timeout: expected seconds above 0, at most 300.",
    ),
    "a key used twice": (
        [
            {"service": "users", "path": "/u", "key": "a"},
            {"service": "orders", "path": "/o", "key": "a"},
        ],
        "backend 2: key: 'a' is already another backend's key.",
    ),
    "an unknown service": (
        [{"service": "ghost", "path": "/g"}],
        "No service named “ghost”: each backend calls a service of the gateway.",
    ),
    "an empty list": ([], "Write the backends as a list of objects"),
}


@pytest.fixture
def services() -> Service:
    make_service("orders", "http://127.0.0.1:9")
    return make_service("users", "http://127.0.0.1:9")


def composite_form(**fields: Any) -> dict[str, Any]:
    """The route page as posted, with the WebSocket fields' defaults it shows."""
    return route_form(websocket_idle_timeout="300", websocket_max_connections="0", **fields)


def admin_refusal(admin_client: Any, service: Service, backends: Any, **fields: Any) -> str:
    form = composite_form(
        name="dash", service=service.pk, path="/dash", backends=json.dumps(backends), **fields
    )
    page = admin_client.post("/admin/routing/route/add/", form)
    assert page.status_code == 200, "the admin saved it"
    errors = page.context["adminform"].form.errors
    return " ".join(errors.get("backends", []))


def api_refusal(client: Any, headers: dict[str, str], backends: Any, **fields: Any) -> str:
    body = {"name": "dash", "service": "users", "path": "/dash", "backends": backends} | fields
    answer = client.post("/admin/api/routes/", json=body, headers=headers)
    assert answer.status_code == 400, answer.text
    found = answer.json()["error"]["fields"]["backends"]
    return found if isinstance(found, str) else " ".join(found)


def document_refusal(backends: Any, **fields: Any) -> str:
    document = {
        "version": 1,
        "services": [
            {"name": "users", "targets": [{"url": "http://127.0.0.1:9"}]},
            {"name": "orders", "targets": [{"url": "http://127.0.0.1:9"}]},
        ],
        "routes": [
            {"name": "dash", "service": "users", "path": "/dash", "backends": backends} | fields
        ],
    }
    with pytest.raises(DocumentInvalid) as refused:
        document_apply(document)
    found = [e for e in refused.value.errors if e.startswith("routes[0].backends: ")]
    assert found, refused.value.errors
    return " ".join(e.removeprefix("routes[0].backends: ") for e in found)


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_the_three_views_refuse_bad_backends_with_the_same_words(
    case, client, admin_client, services
):
    backends, words = BAD[case]
    root = User.objects.get(username="admin")  # admin_client's user

    by_admin = admin_refusal(admin_client, services, backends)
    by_api = api_refusal(client, bearer(root), backends)
    by_document = document_refusal(backends)

    assert words in by_admin
    assert by_admin == by_api == by_document
    assert not Route.objects.exists()


def test_a_composite_route_cannot_also_relay_websockets(client, admin_client, services):
    words = "it cannot also relay WebSockets"
    root = User.objects.get(username="admin")

    assert words in admin_refusal(admin_client, services, GOOD, websocket="on")
    assert words in api_refusal(client, bearer(root), GOOD, websocket=True)
    assert words in document_refusal(GOOD, websocket=True)


def test_the_three_views_accept_good_backends_and_the_gateway_serves_them(
    client, admin_client, services
):
    root = User.objects.get(username="admin")

    saved = admin_client.post(
        "/admin/routing/route/add/",
        composite_form(name="by-admin", service=services.pk, path="/a", backends=json.dumps(GOOD)),
    )
    created = client.post(
        "/admin/api/routes/",
        json={"name": "by-api", "service": "users", "path": "/b", "backends": GOOD},
        headers=bearer(root),
    )
    document = document_export()
    document["routes"].append({"name": "by-document", "service": "users", "path": "/c"})
    document["routes"][-1]["backends"] = GOOD
    document_apply(document)
    publish()

    assert saved.status_code == 302
    assert created.status_code == 201, created.text
    assert created.json()["backends"] == GOOD
    assert {r.name: r.backends for r in Route.objects.all()} == {
        "by-admin": GOOD,
        "by-api": GOOD,
        "by-document": GOOD,
    }
    served = {r.name: r.composite for r in holder.current.routes}
    assert all(c is not None and len(c.backends) == 2 for c in served.values()), served


def test_a_document_with_backends_round_trips_byte_for_byte(services):
    make_route(services, "/dash", name="dash", backends=GOOD)
    make_route(services, "/plain", name="plain")
    exported = document_dump(document_export())
    assert "backends" in exported

    Route.objects.all().delete()
    Service.objects.all().delete()
    document_apply(document_load(exported))

    assert document_dump(document_export()) == exported
    assert Route.objects.get(name="dash").backends == GOOD
    assert Route.objects.get(name="plain").backends is None


def test_a_backend_whose_service_is_disabled_takes_the_route_out_of_service(services):
    make_route(services, "/dash", name="dash", backends=copy.deepcopy(GOOD))
    Service.objects.filter(name="orders").update(enabled=False)
    publish()

    assert "dash" in holder.current.skipped
    assert not any(r.name == "dash" for r in holder.current.routes)
