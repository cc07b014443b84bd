"""Review fixes of the management API: who may name a key's owner, which JWTs name a Portier
user, Unicode digits in filters, bounded numbers in the document, nested-write permissions and
the document's api_keys for callers who may not view keys."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import ApiKey, User
from accounts.serializers import PORTIER_CLAIM, PortierTokenObtainSerializer
from accounts.services import api_key_issue
from routing.api.authentication import UserCredentialsAuthentication
from routing.models import RateLimitTier, Route, RouteTierOverride, Service, Target
from routing.proxy.context import Identity
from routing.upstream.registry_api import GatewayAuthentication
from tests.conftest import make_route, make_service

pytestmark = pytest.mark.django_db(transaction=True)


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {PortierTokenObtainSerializer.get_token(user).access_token}"}


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def user_with(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, email=f"{username}@example.com")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)  # fresh permission cache


@pytest.fixture
def root() -> User:
    return User.objects.create_superuser("root", email="root@example.com", password="pw-9x-long")


# --- 1. API keys for another owner ------------------------------------------------------------


def test_a_user_with_only_add_apikey_cannot_issue_a_key_for_another_owner(client, root):
    minter = user_with("mia", "add_apikey")
    response = client.post(
        "/admin/api/api-keys/", json={"name": "x", "owner": "root"}, headers=bearer(minter)
    )
    assert response.status_code == 403, response.text
    assert error_code(response) == "owner_forbidden"
    assert not ApiKey.objects.exists()
    # Their own key, by default or by naming themselves, is fine.
    mine = client.post("/admin/api/api-keys/", json={"name": "a"}, headers=bearer(minter))
    assert mine.status_code == 201, mine.text
    named = client.post(
        "/admin/api/api-keys/", json={"name": "b", "owner": "mia"}, headers=bearer(minter)
    )
    assert named.status_code == 201, named.text
    assert set(ApiKey.objects.values_list("owner__username", flat=True)) == {"mia"}


def test_a_superuser_or_a_user_manager_issues_a_key_for_another_owner(client, root):
    User.objects.create_user("bob", email="bob@example.com")
    response = client.post(
        "/admin/api/api-keys/", json={"name": "ci", "owner": "bob"}, headers=bearer(root)
    )
    assert response.status_code == 201, response.text
    manager = user_with("mo", "add_apikey", "change_user")
    response = client.post(
        "/admin/api/api-keys/", json={"name": "ci2", "owner": "bob"}, headers=bearer(manager)
    )
    assert response.status_code == 201, response.text
    assert ApiKey.objects.filter(owner__username="bob").count() == 2


# --- 2. Only Portier's own tokens name a Portier user -------------------------------------------


def test_portier_tokens_carry_the_portier_claim(root):
    token = PortierTokenObtainSerializer.get_token(root).access_token
    assert token[PORTIER_CLAIM] == 1


def test_a_token_of_another_issuer_with_the_same_secret_opens_nothing(client, root):
    # What a separate auth service sharing the secret would mint: user id 1, no Portier claim.
    foreign = AccessToken.for_user(root)
    foreign[settings.PORTIER_JWT_ROLES_CLAIM] = []
    response = client.get("/admin/api/services/", headers={"Authorization": f"Bearer {foreign}"})
    assert response.status_code == 401
    assert error_code(response) == "invalid_credentials"
    # The same user's Portier token works, and so do API keys.
    assert client.get("/admin/api/services/", headers=bearer(root)).status_code == 200
    key = api_key_issue(owner=root, name="ci")[1]
    assert client.get("/admin/api/services/", headers={"X-API-Key": key}).status_code == 200


def test_a_non_ascii_digit_subject_is_refused_not_a_500(root, monkeypatch):
    token = PortierTokenObtainSerializer.get_token(root).access_token
    # int() reads Arabic-Indic digits: before the fix this subject named the superuser.
    subject = "".join(chr(0x660 + int(digit)) for digit in str(root.pk))
    identity = Identity(subject=subject, email="", roles=frozenset(), primary_role="", method="jwt")
    monkeypatch.setattr(
        GatewayAuthentication, "authenticate", lambda self, request: (object(), identity)
    )
    request = Request(
        APIRequestFactory().get("/admin/api/services/", HTTP_AUTHORIZATION=f"Bearer {token}")
    )
    with pytest.raises(AuthenticationFailed):
        UserCredentialsAuthentication().authenticate(request)


# --- 3. Unicode digits in filters ----------------------------------------------------------------


@pytest.mark.parametrize("query", ["status=²", "status=\u0661\u0662", "status=9" + "9" * 20])
def test_a_non_ascii_or_huge_status_filter_is_400(client, root, query):
    response = client.get(f"/admin/api/audit/?{query}", headers=bearer(root))
    assert response.status_code == 400, response.text
    assert error_code(response) == "invalid_request"


@pytest.mark.parametrize("target", ["²", "\u0661", "9" * 30])
def test_a_non_ascii_or_huge_history_object_is_no_match_not_a_500(client, root, target):
    make_service("users", "http://127.0.0.1:9")
    response = client.get(f"/admin/api/history/services?object={target}", headers=bearer(root))
    assert response.status_code == 200, response.text
    assert response.json()["results"] == []


# --- 4. Bounded numbers in PUT /admin/api/config ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ("timeouts: {total: .nan}", "services[0].timeouts.total"),
        ("timeouts: {read: .inf}", "services[0].timeouts.read"),
        ("retries: " + "9" * 300, "services[0].retries"),
    ],
)
def test_a_non_finite_or_huge_number_in_the_document_is_400(client, root, body, path):
    document = (
        "version: 1\nservices:\n  - name: users\n"
        f"    {body}\n    targets: [{{url: 'http://127.0.0.1:3002'}}]\n"
    )
    response = client.put(
        "/admin/api/config",
        content=document,
        headers=bearer(root) | {"Content-Type": "application/yaml"},
    )
    assert response.status_code == 400, response.text
    assert error_code(response) == "invalid_request"
    errors = response.json()["error"]["fields"]["document"]
    assert any(error.startswith(f"{path}: expected") for error in errors), errors
    assert not Service.objects.exists()


# --- 5. Nested writes and the document's api_keys -------------------------------------------


def test_change_service_alone_cannot_add_or_delete_targets(client):
    make_service("users", "http://127.0.0.1:9")
    editor = user_with("ed", "view_service", "change_service")
    headers = bearer(editor)
    add = {"targets": [{"url": "http://127.0.0.1:9"}, {"url": "http://127.0.0.1:10"}]}
    response = client.patch("/admin/api/services/users", json=add, headers=headers)
    assert response.status_code == 403, response.text
    drop = {"targets": [{"url": "http://127.0.0.1:11"}]}
    response = client.patch("/admin/api/services/users", json=drop, headers=headers)
    assert response.status_code == 403, response.text
    assert list(Target.objects.values_list("url", flat=True)) == ["http://127.0.0.1:9"]
    # Plain fields, and the same targets unchanged, need nothing more.
    same = {"retries": 3, "targets": [{"url": "http://127.0.0.1:9"}]}
    response = client.patch("/admin/api/services/users", json=same, headers=headers)
    assert response.status_code == 200, response.text
    # With the target permissions, the nested write goes through.
    editor.user_permissions.add(
        *Permission.objects.filter(codename__in=["add_target", "delete_target"])
    )
    response = client.patch("/admin/api/services/users", json=drop, headers=headers)
    assert response.status_code == 200, response.text
    assert list(Target.objects.values_list("url", flat=True)) == ["http://127.0.0.1:11"]


def test_change_route_alone_cannot_write_tier_overrides(client):
    service = make_service("users", "http://127.0.0.1:9")
    make_route(service, "/api/v1/users", name="users")
    Group.objects.get_or_create(name="premium")
    RateLimitTier.objects.create(name="fast", rate="100/m")
    editor = user_with("ed", "view_route", "change_route")
    headers = bearer(editor)
    body: dict[str, Any] = {"tiers_by_role": {"premium": "fast"}}
    response = client.patch("/admin/api/routes/users", json=body, headers=headers)
    assert response.status_code == 403, response.text
    assert not RouteTierOverride.objects.exists()
    response = client.patch("/admin/api/routes/users", json={"priority": 5}, headers=headers)
    assert response.status_code == 200, response.text
    editor.user_permissions.add(Permission.objects.get(codename="add_routetieroverride"))
    response = client.patch("/admin/api/routes/users", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert RouteTierOverride.objects.filter(route=Route.objects.get(name="users")).count() == 1
    response = client.patch("/admin/api/routes/users", json={"tiers_by_role": {}}, headers=headers)
    assert response.status_code == 403, response.text


def test_the_document_lists_api_keys_only_to_who_may_view_them(client, root):
    api_key_issue(owner=root, name="ci")
    codenames = [
        f"{action}_{model}"
        for action in ("view", "add", "change", "delete")
        for model in (
            "service",
            "target",
            "route",
            "rolepolicy",
            "ratelimittier",
            "routetieroverride",
        )
    ] + ["view_gatewaydefaults", "change_gatewaydefaults"]
    operator = user_with("op", *codenames)
    response = client.get("/admin/api/config", headers=bearer(operator))
    assert response.status_code == 200, response.text
    assert "api_keys" not in response.json()
    # Its ETag is of what this caller sees: sent back, the document applies.
    etag = response.headers["ETag"]
    applied = client.put(
        "/admin/api/config",
        json={"version": 1},
        headers=bearer(operator) | {"If-Match": etag},
    )
    assert applied.status_code == 200, applied.text
    assert client.get("/admin/api/config", headers=bearer(root)).json()["api_keys"]
