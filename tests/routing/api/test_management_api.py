"""The management API under /admin/api/ on the running gateway: CRUD of every resource by name,
Django model permissions (admin, auditor, plain user, anonymous), the admin's validation as 400
field errors, ETag / If-Match (412), a write published and served by the live gateway, API keys
whose secret is answered once, the audit trail and the configuration history naming the caller.

Everything is real: the gateway (uvicorn), Redis, the database, the upstreams.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from django.conf import settings
from django.contrib.auth.models import Group, Permission

from accounts.models import ApiKey, User
from accounts.serializers import PortierTokenObtainSerializer
from accounts.services import api_key_issue
from audit.models import AuditEntry
from routing.models import ConfigVersion, RateLimitTier, RolePolicy, Route, Service
from tests.conftest import make_route, make_service, publish, received

# The gateway's threads read users, keys and configuration: the test data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE = 10.0  # seconds any eventual outcome may take on a busy machine
AUDITOR_MODELS = (
    "auditentry",
    "historicalservice",
    "historicaltarget",
    "historicalroute",
    "historicalrolepolicy",
    "historicalratelimittier",
    "historicalroutetieroverride",
    "historicalapikey",
    "historicalgatewaydefaults",
)


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {PortierTokenObtainSerializer.get_token(user).access_token}"}


@pytest.fixture
def admin() -> dict[str, str]:
    user = User.objects.create_superuser("root", email="root@example.com", password="pw-9x-long")
    return bearer(user)


@pytest.fixture
def auditor() -> dict[str, str]:
    # Transactional tests flush the database: the migration's Auditor group may be gone.
    group, _ = Group.objects.get_or_create(name="Auditor")
    group.permissions.set(
        Permission.objects.filter(
            content_type__app_label="audit", codename__in=[f"view_{m}" for m in AUDITOR_MODELS]
        )
    )
    user = User.objects.create_user("olga", email="olga@example.com", is_staff=True)
    user.groups.add(group)
    return bearer(user)


@pytest.fixture
def plain() -> dict[str, str]:
    return bearer(User.objects.create_user("paul", email="paul@example.com"))


def eventually(check: Callable[[], bool], seconds: float = DEADLINE) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


SERVICE = {"name": "users", "targets": [{"url": "http://127.0.0.1:9", "weight": 100}]}


# --- Permissions ---------------------------------------------------------------------------------

RESOURCES = ["services/", "routes/", "policies/", "tiers/", "api-keys/"]
READ_ONLY = ["audit/", "history/routes", "history/services", "history/api-keys"]


@pytest.mark.parametrize("resource", RESOURCES + READ_ONLY + ["config"])
def test_it_answers_401_with_the_standard_body_to_an_anonymous_caller(client, resource):
    response = client.get(f"/admin/api/{resource}")
    assert response.status_code == 401
    assert error_code(response) == "missing_credentials"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["request_id"]


def test_it_refuses_a_bad_token_and_a_token_of_a_deactivated_user(client):
    response = client.get("/admin/api/services/", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert error_code(response) == "invalid_token"
    gone = User.objects.create_superuser("gone", email="gone@example.com", password="x-9-long-pw")
    headers = bearer(gone)
    User.objects.filter(pk=gone.pk).update(is_active=False)
    response = client.get("/admin/api/services/", headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize("resource", RESOURCES + READ_ONLY + ["config"])
def test_a_plain_user_reads_nothing(client, plain, resource):
    response = client.get(f"/admin/api/{resource}", headers=plain)
    assert response.status_code == 403
    assert error_code(response) == "permission_denied"


@pytest.mark.parametrize("resource", [*RESOURCES, "config"])
def test_an_auditor_reads_no_configuration_and_changes_nothing(client, auditor, resource):
    assert client.get(f"/admin/api/{resource}", headers=auditor).status_code == 403
    body = {"name": "x"} if resource != "config" else {"version": 1}
    method = client.put if resource == "config" else client.post
    assert method(f"/admin/api/{resource}", json=body, headers=auditor).status_code == 403
    assert not Service.objects.exists()


@pytest.mark.parametrize("resource", READ_ONLY)
def test_an_auditor_reads_the_audit_trail_and_the_history(client, auditor, resource):
    response = client.get(f"/admin/api/{resource}", headers=auditor)
    assert response.status_code == 200
    assert response.json()["results"] == []


def test_an_auditor_cannot_delete_an_audit_entry(client, auditor, admin):
    entry = AuditEntry.objects.create(request_id="r1", outcome="allowed", method="GET", path="/x")
    assert client.delete(f"/admin/api/audit/{entry.pk}", headers=auditor).status_code == 403
    # Not even a superuser: the trail is read-only.
    assert client.delete(f"/admin/api/audit/{entry.pk}", headers=admin).status_code == 405
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_a_user_with_only_the_view_permission_reads_but_cannot_write(client):
    reader = User.objects.create_user("rita", email="rita@example.com")
    reader.user_permissions.add(Permission.objects.get(codename="view_service"))
    headers = bearer(reader)
    make_service("users", "http://127.0.0.1:9")
    assert client.get("/admin/api/services/users", headers=headers).status_code == 200
    response = client.patch("/admin/api/services/users", json={"retries": 3}, headers=headers)
    assert response.status_code == 403
    assert Service.objects.get(name="users").retries == 1


def test_an_admins_api_key_opens_the_api(client):
    owner = User.objects.create_superuser("kim", email="kim@example.com", password="pw-9x-long")
    key = api_key_issue(owner=owner, name="ci")[1]
    response = client.get("/admin/api/services/", headers={"X-API-Key": key})
    assert response.status_code == 200


# --- CRUD ----------------------------------------------------------------------------------------


def test_services_with_their_targets_are_created_read_changed_and_deleted_by_name(client, admin):
    response = client.post("/admin/api/services/", json=SERVICE, headers=admin)
    assert response.status_code == 201, response.text
    assert response.json()["targets"] == [
        {"url": "http://127.0.0.1:9", "weight": 100, "enabled": True}
    ]

    listed = client.get("/admin/api/services/", headers=admin).json()
    assert listed["count"] == 1
    assert [s["name"] for s in listed["results"]] == ["users"]

    targets = [{"url": "http://127.0.0.1:10", "weight": 5}, {"url": "http://127.0.0.1:9"}]
    response = client.patch(
        "/admin/api/services/users", json={"retries": 2, "targets": targets}, headers=admin
    )
    assert response.status_code == 200, response.text
    service = Service.objects.get(name="users")
    assert service.retries == 2
    assert sorted(service.targets.values_list("url", "weight")) == [
        ("http://127.0.0.1:10", 5),
        ("http://127.0.0.1:9", 100),
    ]

    assert client.delete("/admin/api/services/users", headers=admin).status_code == 204
    assert not Service.objects.exists()
    assert client.get("/admin/api/services/users", headers=admin).status_code == 404


def test_routes_name_their_service_policy_tiers_and_tiers_by_role(client, admin):
    make_service("users", "http://127.0.0.1:9")
    RolePolicy.objects.create(name="signed-in", kind=RolePolicy.Kind.AUTHENTICATED)
    RateLimitTier.objects.create(name="general", rate="100/15m")
    RateLimitTier.objects.create(name="premium", rate="1000/15m")
    Group.objects.create(name="gold")
    route = {
        "name": "users",
        "service": "users",
        "path": "/api/v1/users",
        "methods": ["get", "POST"],
        "strip_prefix": True,
        "policy": "signed-in",
        "tier": "general",
        "tiers_by_role": {"gold": "premium"},
    }
    response = client.post("/admin/api/routes/", json=route, headers=admin)
    assert response.status_code == 201, response.text
    body = client.get("/admin/api/routes/users", headers=admin).json()
    assert body["methods"] == ["GET", "POST"]  # normalised by the model's clean()
    assert body["tiers_by_role"] == {"gold": "premium"}
    assert (body["policy"], body["tier"], body["service"]) == ("signed-in", "general", "users")

    response = client.patch(
        "/admin/api/routes/users", json={"tiers_by_role": {}, "policy": None}, headers=admin
    )
    assert response.status_code == 200, response.text
    saved = Route.objects.get(name="users")
    assert saved.role_policy is None
    assert not saved.tier_overrides.exists()
    assert client.get("/admin/api/routes/?service=users", headers=admin).json()["count"] == 1
    assert client.get("/admin/api/routes/?service=other", headers=admin).json()["count"] == 0
    assert client.delete("/admin/api/routes/users", headers=admin).status_code == 204


def test_policies_name_their_roles_and_tiers_are_plain(client, admin):
    Group.objects.create(name="doctor")
    policy = {"name": "doctors-only", "kind": "any_of", "roles": ["doctor"]}
    assert client.post("/admin/api/policies/", json=policy, headers=admin).status_code == 201
    assert list(RolePolicy.objects.get().roles.values_list("name", flat=True)) == ["doctor"]
    response = client.put(
        "/admin/api/policies/doctors-only",
        json={"name": "doctors-only", "kind": "authenticated", "roles": []},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    assert client.delete("/admin/api/policies/doctors-only", headers=admin).status_code == 204

    tier = {"name": "general", "rate": " 100/15m ", "key": "user"}
    response = client.post("/admin/api/tiers/", json=tier, headers=admin)
    assert response.status_code == 201, response.text
    assert RateLimitTier.objects.get().rate == "100/15m"
    assert client.get("/admin/api/tiers/general", headers=admin).json()["rate"] == "100/15m"
    assert client.delete("/admin/api/tiers/general", headers=admin).status_code == 204


def test_a_service_still_used_by_a_route_cannot_be_deleted(client, admin):
    make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users")
    response = client.delete("/admin/api/services/users", headers=admin)
    assert response.status_code == 409
    assert error_code(response) == "in_use"
    assert Service.objects.filter(name="users").exists()


def test_lists_are_paginated(client, admin):
    for index in range(3):
        RateLimitTier.objects.create(name=f"t{index}", rate="1/m")
    page = client.get("/admin/api/tiers/?page_size=2", headers=admin).json()
    assert page["count"] == 3
    assert [t["name"] for t in page["results"]] == ["t0", "t1"]
    assert page["next"]
    page = client.get("/admin/api/tiers/?page_size=2&page=2", headers=admin).json()
    assert [t["name"] for t in page["results"]] == ["t2"]


# --- The admin's validation ----------------------------------------------------------------------


def route_error(client: httpx.Client, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": "bad", "service": "users", "path": "/ok"} | fields
    response = client.post("/admin/api/routes/", json=body, headers=admin)
    assert response.status_code == 400, response.text
    assert error_code(response) == "invalid_request"
    return response.json()["error"]["fields"]


def test_bad_routes_are_refused_with_field_errors_and_nothing_is_saved(client, admin):
    make_service("users", "http://127.0.0.1:9")
    assert "served by the gateway" in route_error(client, admin, path="/admin/users")["path"][0]
    shadowing = route_error(client, admin, path="^/admin/.*", match_type="regex")
    assert "shadow" in shadowing["path"][0]
    assert (
        "does not compile" in route_error(client, admin, path="/(", match_type="regex")["path"][0]
    )
    assert route_error(client, admin, service="nope")["service"]
    assert route_error(client, admin, methods=["FETCH"])["methods"]
    assert route_error(client, admin, policy="nope")["policy"]
    assert route_error(client, admin, tiers_by_role={"nobody": "nothing"})["tiers_by_role"]
    assert not Route.objects.exists()


def test_bad_services_policies_and_tiers_are_refused_with_field_errors(client, admin):
    def refused(resource: str, body: dict[str, Any]) -> dict[str, Any]:
        response = client.post(f"/admin/api/{resource}/", json=body, headers=admin)
        assert response.status_code == 400, response.text
        return response.json()["error"]["fields"]

    assert refused("services", {"name": "s", "targets": []})["targets"]  # nowhere to send
    assert refused("services", {**SERVICE, "retry_statuses": "404"})["retry_statuses"]
    bad_target = {"name": "s", "targets": [{"url": "ftp://127.0.0.1"}]}
    assert "targets[0].url" in refused("services", bad_target)
    assert refused("policies", {"name": "p", "kind": "any_of", "roles": []})["roles"]
    assert refused("tiers", {"name": "t", "rate": "lots"})["rate"]
    client.post("/admin/api/services/", json=SERVICE, headers=admin)
    assert refused("services", SERVICE)["name"]  # unique, as in the admin
    assert Service.objects.count() == 1


# --- Optimistic concurrency ----------------------------------------------------------------------


def test_a_stale_if_match_is_412_and_a_current_one_is_accepted(client, admin):
    client.post("/admin/api/services/", json=SERVICE, headers=admin)
    read = client.get("/admin/api/services/users", headers=admin)
    etag = read.headers["ETag"]
    assert client.get("/admin/api/services/users", headers=admin).headers["ETag"] == etag

    first = client.patch(
        "/admin/api/services/users", json={"retries": 2}, headers=admin | {"If-Match": etag}
    )
    assert first.status_code == 200
    assert first.headers["ETag"] != etag

    second = client.patch(
        "/admin/api/services/users", json={"retries": 3}, headers=admin | {"If-Match": etag}
    )
    assert second.status_code == 412
    assert error_code(second) == "precondition_failed"
    stale_delete = client.delete("/admin/api/services/users", headers=admin | {"If-Match": etag})
    assert stale_delete.status_code == 412
    assert Service.objects.get(name="users").retries == 2

    current = first.headers["ETag"]
    third = client.patch(
        "/admin/api/services/users", json={"retries": 3}, headers=admin | {"If-Match": current}
    )
    assert third.status_code == 200
    assert Service.objects.get(name="users").retries == 3


# --- Publish and serve ---------------------------------------------------------------------------


def test_a_write_publishes_one_version_and_the_live_gateway_serves_it(client, admin, upstream):
    publish()
    before = ConfigVersion.objects.get().number
    service = {"name": "echo", "targets": [{"url": upstream.url}]}
    assert client.post("/admin/api/services/", json=service, headers=admin).status_code == 201
    assert ConfigVersion.objects.get().number == before + 1  # targets and service: one version
    route = {"name": "echo", "service": "echo", "path": "/via-api"}
    assert client.post("/admin/api/routes/", json=route, headers=admin).status_code == 201
    assert ConfigVersion.objects.get().number == before + 2

    assert eventually(lambda: client.get("/via-api/hello").status_code == 200)
    assert received(upstream)[-1]["path"] == "/via-api/hello"


def test_a_refused_write_publishes_nothing(client, admin):
    publish()
    before = ConfigVersion.objects.get().number
    response = client.post("/admin/api/services/", json={"name": "s", "targets": []}, headers=admin)
    assert response.status_code == 400
    assert ConfigVersion.objects.get().number == before


# --- API keys ------------------------------------------------------------------------------------


def test_an_api_key_is_answered_once_and_then_opens_a_proxied_route(client, admin, upstream):
    signed_in = RolePolicy.objects.create(name="signed-in", kind=RolePolicy.Kind.AUTHENTICATED)
    make_route(make_service("echo", upstream.url), "/keyed", role_policy=signed_in)
    publish()
    User.objects.create_user("bot", email="bot@example.com")

    created = client.post(
        "/admin/api/api-keys/", json={"name": "ci", "owner": "bot"}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    key, prefix = body["key"], body["prefix"]
    assert key.startswith(f"ptr_{prefix}.")
    assert ApiKey.objects.get(prefix=prefix).owner.username == "bot"

    read = client.get(f"/admin/api/api-keys/{prefix}", headers=admin).json()
    listed = client.get("/admin/api/api-keys/", headers=admin).text
    assert "key" not in read and "hashed_key" not in read
    assert key.split(".")[1] not in listed
    assert ApiKey.objects.get(prefix=prefix).hashed_key not in listed

    assert client.get("/keyed", headers={"X-API-Key": key}).status_code == 200
    assert received(upstream)[-1]["path"] == "/keyed"

    assert client.delete(f"/admin/api/api-keys/{prefix}", headers=admin).status_code == 204
    assert ApiKey.objects.get(prefix=prefix).revoked_at is not None
    assert eventually(lambda: client.get("/keyed", headers={"X-API-Key": key}).status_code == 401)


# --- Audit trail and history ---------------------------------------------------------------------


def test_the_audit_trail_filters_by_route_outcome_caller_and_date(client, auditor):
    AuditEntry.objects.create(
        request_id="a", outcome="allowed", method="GET", path="/u", route="users", caller_id="7"
    )
    AuditEntry.objects.create(
        request_id="b", outcome="denied", method="GET", path="/o", route="orders", caller_id="8"
    )

    def ids(query: str) -> list[str]:
        response = client.get(f"/admin/api/audit/?{query}", headers=auditor)
        assert response.status_code == 200, response.text
        return sorted(e["request_id"] for e in response.json()["results"])

    assert ids("") == ["a", "b"]
    assert ids("route=users") == ["a"]
    assert ids("outcome=denied") == ["b"]
    assert ids("caller=7") == ["a"]
    assert ids("since=2000-01-01&until=2999-12-31") == ["a", "b"]
    assert ids("until=2000-01-01") == []
    entry = client.get(
        f"/admin/api/audit/{AuditEntry.objects.get(request_id='a').pk}", headers=auditor
    )
    assert entry.json()["route"] == "users"
    assert entry.headers["ETag"]
    bad = client.get("/admin/api/audit/?since=yesterday", headers=auditor)
    assert bad.status_code == 400
    assert "since" in bad.json()["error"]["fields"]


def test_history_names_the_api_caller_with_the_values_before_and_after(client, admin, auditor):
    client.post("/admin/api/services/", json=SERVICE, headers=admin)
    client.patch("/admin/api/services/users", json={"retries": 4}, headers=admin)

    response = client.get("/admin/api/history/services?object=users", headers=auditor)
    assert response.status_code == 200, response.text
    changed, created = response.json()["results"]
    assert changed["user"] == "root"
    assert changed["action"] == "changed"
    assert changed["changed"] == ["retries"]
    assert (changed["before"], changed["after"]) == ({"retries": 1}, {"retries": 4})
    assert created["action"] == "created"
    assert created["after"]["name"] == "users"

    targets = client.get("/admin/api/history/targets?user=root", headers=auditor).json()
    assert targets["results"][0]["after"]["service"] == "users"
    assert client.get("/admin/api/history/nothing", headers=auditor).status_code == 404

    Group.objects.create(name="doctor")
    policy = {"name": "doctors", "kind": "any_of", "roles": ["doctor"]}
    client.post("/admin/api/policies/", json=policy, headers=admin)
    policies = client.get("/admin/api/history/policies", headers=auditor).json()["results"]
    assert policies[0]["after"]["roles"] == ["doctor"]


# --- The whole document --------------------------------------------------------------------------

DOCUMENT = """
version: 1
services:
  - name: users
    targets: [{url: "http://127.0.0.1:9", weight: 100}]
tiers:
  - {name: general, rate: 100/15m, key: user}
routes:
  - {name: users, service: users, path: /api/v1/users, tier: general}
"""
YAML = {"Content-Type": "application/yaml"}


def test_the_document_is_read_as_json_or_yaml_with_an_etag(client, admin):
    make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users")
    as_json = client.get("/admin/api/config", headers=admin)
    assert as_json.status_code == 200
    document = as_json.json()
    assert document["version"] == 1
    assert [s["name"] for s in document["services"]] == ["users"]
    assert as_json.headers["ETag"]

    by_accept = client.get("/admin/api/config", headers=admin | {"Accept": "application/yaml"})
    by_query = client.get("/admin/api/config?format=yaml", headers=admin)
    for response in (by_accept, by_query):
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/yaml")
        assert yaml.safe_load(response.text) == document
        assert response.headers["ETag"] == as_json.headers["ETag"]


def test_a_dry_run_answers_the_diff_and_changes_nothing(client, admin):
    publish()
    before = ConfigVersion.objects.get().number
    response = client.put("/admin/api/config?dry_run=1", content=DOCUMENT, headers=admin | YAML)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True and body["changed"] is True
    assert body["changes"]["added"]
    assert not Service.objects.exists() and not Route.objects.exists()
    assert ConfigVersion.objects.get().number == before


def test_a_document_is_applied_as_one_version_recorded_as_the_caller(client, admin, upstream):
    publish()
    before = ConfigVersion.objects.get().number
    document = DOCUMENT.replace("http://127.0.0.1:9", upstream.url)
    response = client.put("/admin/api/config", content=document, headers=admin | YAML)
    assert response.status_code == 200, response.text
    assert response.json()["changed"] is True
    assert ConfigVersion.objects.get().number == before + 1
    assert Route.objects.get(name="users").rate_limit_tier.name == "general"
    assert Service.objects.get(name="users").history.first().history_user.username == "root"
    assert eventually(lambda: client.get("/api/v1/users").status_code == 200)

    again = client.put("/admin/api/config", content=document, headers=admin | YAML)
    assert again.json()["changed"] is False  # idempotent: nothing changed, nothing published
    assert ConfigVersion.objects.get().number == before + 1


def test_a_bad_document_is_refused_with_the_paths_of_its_errors(client, admin):
    bad = DOCUMENT.replace("service: users", "service: nobody")
    response = client.put("/admin/api/config", content=bad, headers=admin | YAML)
    assert response.status_code == 400
    assert error_code(response) == "invalid_request"
    errors = response.json()["error"]["fields"]["document"]
    assert any(error.startswith("routes[0].service") for error in errors), errors
    assert not Service.objects.exists()
    broken = client.put("/admin/api/config", content="version: [", headers=admin | YAML)
    assert broken.status_code == 400
    assert error_code(broken) == "invalid_request"


def test_a_stale_document_etag_is_412_and_prune_removes_what_it_lacks(client, admin):
    etag = client.get("/admin/api/config", headers=admin).headers["ETag"]
    RateLimitTier.objects.create(name="old", rate="1/m")  # someone changed it meanwhile
    stale = client.put(
        "/admin/api/config", content=DOCUMENT, headers=admin | YAML | {"If-Match": etag}
    )
    assert stale.status_code == 412
    assert error_code(stale) == "precondition_failed"
    assert not Service.objects.exists()

    current = client.get("/admin/api/config", headers=admin).headers["ETag"]
    pruned = client.put(
        "/admin/api/config?prune=1",
        json=yaml.safe_load(DOCUMENT),
        headers=admin | {"If-Match": current},
    )
    assert pruned.status_code == 200, pruned.text
    assert sorted(RateLimitTier.objects.values_list("name", flat=True)) == ["general"]
    assert pruned.headers["ETag"] == client.get("/admin/api/config", headers=admin).headers["ETag"]


def test_the_seed_004_example_applies_through_the_api_as_the_readme_shows(client, admin):
    example = (Path(settings.BASE_DIR) / "docs" / "examples" / "seed-004.yaml").read_text()
    response = client.put("/admin/api/config", content=example, headers=admin | YAML)
    assert response.status_code == 200, response.text
    assert Service.objects.count() == 8
    again = client.put("/admin/api/config?dry_run=1", content=example, headers=admin | YAML)
    assert again.json()["changed"] is False
    exported = client.get("/admin/api/config", headers=admin | {"Accept": "application/yaml"})
    assert len(yaml.safe_load(exported.text)["services"]) == 8


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest", "http://[::ffff:169.254.169.254]/", "http://0.0.0.0:80"],
)
def test_a_target_at_a_metadata_or_unspecified_address_is_refused(client, admin, url):
    body = {"name": "evil", "targets": [{"url": url}]}
    response = client.post("/admin/api/services/", json=body, headers=admin)
    assert response.status_code == 400, response.text
    assert "targets[0].url" in response.json()["error"]["fields"]
    assert not Service.objects.exists()
