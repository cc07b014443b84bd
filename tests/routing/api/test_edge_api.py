"""The edge options through the management API: a route's transform, CORS, security headers,
HTTPS redirect, compression and IP lists read and written with the admin's validation, and the
gateway-wide defaults as one object at /admin/api/defaults, with the same permissions, ETags and
history as every configuration object."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Group, Permission

from accounts.models import User
from routing.models import ConfigVersion, GatewayDefaults, Route
from tests.conftest import make_service, publish
from tests.routing.api.test_management_api import AUDITOR_MODELS, bearer, error_code

# The gateway's threads read users and configuration: the test data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

APP_CORS = {"origins": ["https://app.example.com"], "credentials": True, "max_age": 600}
TRANSFORM = {
    "request": {"headers": {"set": {"X-Tenant": "acme"}, "remove": ["X-Debug"]}},
    "response": {"headers": {"remove": ["Server"]}},
}


@pytest.fixture
def admin() -> dict[str, str]:
    return bearer(User.objects.create_superuser("root", email="r@example.com", password="x"))


def staff_with(*codenames: str) -> dict[str, str]:
    """A staff user holding only these routing permissions."""
    user = User.objects.create_user(f"staff-{len(codenames)}", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="routing", codename__in=codenames)
    )
    return bearer(user)


def version() -> int:
    return ConfigVersion.objects.get().number


# --- A route's edge options ----------------------------------------------------------------


def test_a_route_reads_and_writes_its_edge_options(client, admin):
    make_service("users", "http://127.0.0.1:9")
    route = {
        "name": "users",
        "service": "users",
        "path": "/api/v1/users",
        "transform": TRANSFORM,
        "cors": False,
        "security_headers": {"frame_options": "SAMEORIGIN"},
        "https_redirect": True,
        "compression": False,
        "ip_allow": ["10.0.0.0/8"],
        "ip_deny": ["10.9.0.0/16"],
    }

    created = client.post("/admin/api/routes/", json=route, headers=admin)
    read = client.get("/admin/api/routes/users", headers=admin).json()

    assert created.status_code == 201, created.text
    assert {key: read[key] for key in route if key != "service"} == {
        key: value for key, value in route.items() if key != "service"
    }
    changed = client.patch(
        "/admin/api/routes/users",
        json={"cors": APP_CORS, "https_redirect": None, "ip_allow": []},
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    saved = Route.objects.get(name="users")
    assert (saved.cors, saved.https_redirect, saved.ip_allow) == (APP_CORS, None, [])
    assert saved.transform == TRANSFORM  # left as it was


def test_a_new_route_inherits_every_edge_option(client, admin):
    make_service("users", "http://127.0.0.1:9")
    body = {"name": "plain", "service": "users", "path": "/plain"}

    created = client.post("/admin/api/routes/", json=body, headers=admin).json()

    assert {key: created[key] for key in ("transform", "cors", "security_headers")} == {
        "transform": {},
        "cors": None,
        "security_headers": None,
    }
    assert (created["https_redirect"], created["compression"]) == (None, None)
    assert (created["ip_allow"], created["ip_deny"]) == ([], [])


def route_refused(client: httpx.Client, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": "bad", "service": "users", "path": "/ok"} | fields
    response = client.post("/admin/api/routes/", json=body, headers=admin)
    assert response.status_code == 400, response.text
    assert error_code(response) == "invalid_request"
    return response.json()["error"]["fields"]


def test_bad_edge_blocks_are_refused_with_the_admins_messages_and_nothing_is_saved(client, admin):
    make_service("users", "http://127.0.0.1:9")

    cors = route_refused(client, admin, cors={"origins": ["*"], "credentials": True})["cors"]
    guarded = {"request": {"headers": {"set": {"Authorization": "x"}}}}
    transform = route_refused(client, admin, transform=guarded)["transform"]
    security = route_refused(client, admin, security_headers={"hsts": 1})["security_headers"]
    ip_allow = route_refused(client, admin, ip_allow=["not-an-ip"])["ip_allow"]
    ip_deny = route_refused(client, admin, ip_deny="10.0.0.0/8")["ip_deny"]
    redirect = route_refused(client, admin, https_redirect="maybe")["https_redirect"]

    assert "cannot be combined with credentials" in cors[0]
    assert "Authorization is set by the gateway itself" in transform[0]
    assert "hsts: unknown key" in security[0]
    assert "'not-an-ip' is not an IP address" in ip_allow[0]
    assert "Write a list of addresses" in ip_deny[0]
    assert redirect
    assert not Route.objects.exists()


# --- /admin/api/defaults -------------------------------------------------------------------

BUILT_IN = {
    "cors": None,
    "security_headers": {},
    "https_redirect": False,
    "compression": False,
    "compression_min_bytes": 1024,
}


@pytest.mark.parametrize("url", ["/admin/api/defaults", "/admin/api/defaults/"])
def test_the_defaults_read_as_their_built_in_values_without_writing(client, admin, url):
    response = client.get(url, headers=admin)

    assert response.status_code == 200, response.text
    assert response.json() == BUILT_IN
    assert response.headers["ETag"]
    assert not GatewayDefaults.objects.exists()


def test_put_and_patch_change_the_defaults_and_publish_each_change(client, admin):
    publish()
    before = version()
    wanted = {**BUILT_IN, "cors": APP_CORS, "security_headers": {"hsts_max_age": 0}}

    put = client.put("/admin/api/defaults", json=wanted, headers=admin)
    patch = client.patch("/admin/api/defaults/", json={"compression": True}, headers=admin)

    assert put.status_code == 200, put.text
    assert patch.status_code == 200, patch.text
    assert patch.json() == {**wanted, "compression": True}
    saved = GatewayDefaults.objects.get()
    assert (saved.cors, saved.compression) == (APP_CORS, True)
    assert version() == before + 2
    assert client.get("/admin/api/defaults", headers=admin).json() == patch.json()


def test_bad_defaults_are_refused_with_field_errors_and_nothing_changes(client, admin):
    publish()
    before = version()

    response = client.patch(
        "/admin/api/defaults",
        json={"cors": False, "security_headers": {"frame_options": "ALLOW"}},
        headers=admin,
    )

    assert response.status_code == 400
    assert error_code(response) == "invalid_request"
    fields = response.json()["error"]["fields"]
    assert "Write CORS as an object" in fields["cors"][0]
    assert "'ALLOW' is not one of" in fields["security_headers"][0]
    negative = client.patch(
        "/admin/api/defaults", json={"compression_min_bytes": -1}, headers=admin
    )
    assert negative.status_code == 400
    assert "compression_min_bytes" in negative.json()["error"]["fields"]
    assert not GatewayDefaults.objects.exists()
    assert version() == before


def test_a_stale_if_match_on_the_defaults_is_412(client, admin):
    etag = client.get("/admin/api/defaults", headers=admin).headers["ETag"]
    first = client.patch(
        "/admin/api/defaults", json={"compression": True}, headers=admin | {"If-Match": etag}
    )

    stale = client.patch(
        "/admin/api/defaults", json={"https_redirect": True}, headers=admin | {"If-Match": etag}
    )
    current = client.patch(
        "/admin/api/defaults",
        json={"https_redirect": True},
        headers=admin | {"If-Match": first.headers["ETag"]},
    )

    assert first.status_code == 200
    assert first.headers["ETag"] != etag
    assert stale.status_code == 412
    assert error_code(stale) == "precondition_failed"
    assert current.status_code == 200
    saved = GatewayDefaults.objects.get()
    assert (saved.compression, saved.https_redirect) == (True, True)


def test_the_defaults_need_their_model_permissions(client):
    nothing = staff_with()
    viewer = staff_with("view_gatewaydefaults")
    editor = staff_with("view_gatewaydefaults", "change_gatewaydefaults")

    assert client.get("/admin/api/defaults").status_code == 401
    refused = client.get("/admin/api/defaults", headers=nothing)
    assert refused.status_code == 403
    assert error_code(refused) == "permission_denied"
    assert client.put("/admin/api/defaults", json=BUILT_IN, headers=nothing).status_code == 403
    assert client.get("/admin/api/defaults", headers=viewer).status_code == 200
    patch = {"compression": True}
    assert client.patch("/admin/api/defaults", json=patch, headers=viewer).status_code == 403
    assert not GatewayDefaults.objects.exists()
    assert client.patch("/admin/api/defaults", json=patch, headers=editor).status_code == 200
    assert GatewayDefaults.objects.get().compression is True


def test_the_defaults_history_names_the_caller_with_before_and_after(client, admin):
    client.patch("/admin/api/defaults", json={"compression": True}, headers=admin)
    client.patch("/admin/api/defaults", json={"compression_min_bytes": 256}, headers=admin)

    response = client.get("/admin/api/history/defaults", headers=admin)

    assert response.status_code == 200, response.text
    # The first write makes the row with the built-in values, then changes it.
    threshold, compression, created = response.json()["results"]
    assert threshold["user"] == "root"
    assert threshold["object"] == "Gateway defaults"
    assert (threshold["before"], threshold["after"]) == (
        {"compression_min_bytes": 1024},
        {"compression_min_bytes": 256},
    )
    assert (compression["before"], compression["after"]) == (
        {"compression": False},
        {"compression": True},
    )
    assert (created["action"], created["user"]) == ("created", "root")


def test_the_defaults_are_in_the_openapi_schema(client, admin):
    schema = client.get("/admin/api/schema/?format=json", headers=admin).json()

    operations = schema["paths"]["/admin/api/defaults/"]
    assert set(operations) == {"get", "put", "patch"}
    assert "cors" in schema["components"]["schemas"]["Defaults"]["properties"]
    assert "ip_allow" in schema["components"]["schemas"]["Route"]["properties"]


def test_an_auditor_reads_the_defaults_history(client, admin):
    # Transactional tests flush the database: the Auditor group is made as the migrations do.
    group, _ = Group.objects.get_or_create(name="Auditor")
    group.permissions.set(
        Permission.objects.filter(
            content_type__app_label="audit", codename__in=[f"view_{m}" for m in AUDITOR_MODELS]
        )
    )
    user = User.objects.create_user("olga", email="olga@example.com", is_staff=True)
    user.groups.add(group)
    auditor = bearer(user)
    client.patch("/admin/api/defaults", json={"https_redirect": True}, headers=admin)

    response = client.get("/admin/api/history/defaults", headers=auditor)

    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["after"] == {"https_redirect": True}
    assert client.patch("/admin/api/defaults", json={}, headers=auditor).status_code == 403


def test_applying_a_document_needs_the_permission_to_change_the_defaults(client):
    document_perms = [
        f"{action}_{model}"
        for model in (
            "service",
            "target",
            "route",
            "rolepolicy",
            "ratelimittier",
            "routetieroverride",
        )
        for action in ("view", "add", "change", "delete")
    ]
    without = staff_with(*document_perms, "view_gatewaydefaults")
    document = {"version": 1, "defaults": {"https_redirect": True}}

    refused = client.put("/admin/api/config", json=document, headers=without)

    assert refused.status_code == 403
    assert not GatewayDefaults.objects.exists()
    assert client.get("/admin/api/config", headers=without).status_code == 200
    with_change = staff_with(*document_perms, "view_gatewaydefaults", "change_gatewaydefaults")
    applied = client.put("/admin/api/config", json=document, headers=with_change)
    assert applied.status_code == 200, applied.text
    assert GatewayDefaults.objects.get().https_redirect is True
