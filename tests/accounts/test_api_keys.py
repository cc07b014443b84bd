"""API keys: issued in the admin, shown once, stored hashed, and honoured by the gateway."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.services import api_key_issue, api_key_revoke, hash_key
from routing.models import RolePolicy
from tests.conftest import make_route, make_service, publish, received

# The gateway's own threads look keys up in the database: the test data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def partner() -> User:
    user = User.objects.create_user("billing-sync", email="billing@example.com", password="x")
    user.groups.add(Group.objects.create(name="billing"))
    return user


@pytest.fixture
def billing_route(upstream):
    policy = RolePolicy.objects.create(name="billing-only", kind=RolePolicy.Kind.ANY_OF)
    policy.roles.set(Group.objects.filter(name="billing"))
    make_route(make_service("billing", upstream.url), "/billing", role_policy=policy)
    publish()


def test_a_key_is_stored_only_as_a_hash(partner):
    api_key, key = api_key_issue(owner=partner, name="sync")

    stored = ApiKey.objects.get(pk=api_key.pk)
    assert key.startswith(f"ptr_{stored.prefix}.")
    assert stored.hashed_key == hash_key(key)
    assert key not in str(ApiKey.objects.filter(pk=api_key.pk).values().get())


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
def test_a_key_authenticates_as_its_owner_with_the_owners_roles(
    client, upstream, partner, billing_route, header
):
    _, key = api_key_issue(owner=partner, name="sync")
    value = key if header == "X-API-Key" else f"ApiKey {key}"

    response = client.get("/billing/invoices", headers={header: value})

    assert response.status_code == 200
    seen = dict(received(upstream)[-1]["headers"])
    assert seen["x-user-id"] == str(partner.pk)
    assert seen["x-user-roles"] == "billing"
    assert seen["x-user-email"] == "billing@example.com"
    # Last use is recorded off the request's path, a moment later.
    deadline = time.monotonic() + 2.0
    while ApiKey.objects.get(prefix=key[4:12]).last_used_at is None:
        assert time.monotonic() < deadline, "the key's last use was never recorded"
        time.sleep(0.02)


def test_a_key_without_the_role_is_forbidden(client, upstream, billing_route):
    outsider = User.objects.create_user("outsider", password="x")
    _, key = api_key_issue(owner=outsider, name="x")

    response = client.get("/billing/invoices", headers={"X-API-Key": key})

    assert response.status_code == 403
    assert received(upstream) == []


@pytest.mark.parametrize(
    "mangle",
    [
        lambda key: key[:-4] + "AAAA",  # right prefix, wrong secret
        lambda key: "ptr_00000000." + "A" * 43,  # unknown prefix
        lambda key: "not-a-key",
    ],
)
def test_a_wrong_key_is_refused(client, upstream, partner, billing_route, mangle):
    _, key = api_key_issue(owner=partner, name="sync")

    response = client.get("/billing/invoices", headers={"X-API-Key": mangle(key)})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"].startswith("ApiKey")
    assert received(upstream) == []


def test_an_expired_key_is_refused(client, upstream, partner, billing_route):
    _, key = api_key_issue(
        owner=partner, name="old", expires_at=timezone.now() - timedelta(seconds=1)
    )

    response = client.get("/billing/invoices", headers={"X-API-Key": key})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_revoked_key_stops_working_within_about_a_second(
    client, upstream, partner, billing_route
):
    api_key, key = api_key_issue(owner=partner, name="sync")
    assert client.get("/billing/x", headers={"X-API-Key": key}).status_code == 200

    api_key_revoke(api_key=api_key)
    revoked_at = time.monotonic()
    while client.get("/billing/x", headers={"X-API-Key": key}).status_code == 200:
        assert time.monotonic() - revoked_at < 2.0, "revoked key still accepted after 2 s"
        time.sleep(0.05)

    assert time.monotonic() - revoked_at < 2.0


def test_losing_a_role_takes_effect_on_the_key(client, upstream, partner, billing_route):
    _, key = api_key_issue(owner=partner, name="sync")
    assert client.get("/billing/x", headers={"X-API-Key": key}).status_code == 200

    partner.groups.clear()
    changed_at = time.monotonic()
    while client.get("/billing/x", headers={"X-API-Key": key}).status_code == 200:
        assert time.monotonic() - changed_at < 2.0
        time.sleep(0.05)


def test_the_admin_shows_a_new_key_once_and_never_its_hash(admin_client, partner):
    response = admin_client.post(
        "/admin/accounts/apikey/add/", {"owner": partner.pk, "name": "from-admin"}, follow=True
    )

    api_key = ApiKey.objects.get(name="from-admin")
    assert api_key.owner == partner  # a superuser issues keys for anyone
    shown = [str(m) for m in response.context["messages"]]
    assert any(f"ptr_{api_key.prefix}." in message for message in shown)
    listing = admin_client.get("/admin/accounts/apikey/").content.decode()
    change = admin_client.get(f"/admin/accounts/apikey/{api_key.pk}/change/").content.decode()
    for page in (listing, change):
        assert api_key.prefix in page
        assert api_key.hashed_key not in page
        assert "ptr_" + api_key.prefix + "." not in page


def test_the_admin_revokes_selected_keys(admin_client, partner):
    api_key, _ = api_key_issue(owner=partner, name="sync")

    admin_client.post(
        "/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]}
    )

    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is not None


def staff_with(*codenames: str) -> Client:
    """The admin, signed in as a staff user holding only these accounts permissions."""
    clerk = User.objects.create_user("clerk", email="clerk@example.com", password="x")
    clerk.is_staff = True
    clerk.save()
    clerk.user_permissions.set(
        Permission.objects.filter(content_type__app_label="accounts", codename__in=codenames)
    )
    browser = Client()
    browser.force_login(clerk)
    return browser


API_KEY_PERMISSIONS = ("add_apikey", "change_apikey", "view_apikey")


def test_staff_with_only_api_key_permissions_issue_keys_for_themselves_only():
    # A key acts as its owner: one issued for a superuser would be a superuser's key.
    root = User.objects.create_superuser("root", email="root@example.com", password="x")
    browser = staff_with(*API_KEY_PERMISSIONS)

    form = browser.get("/admin/accounts/apikey/add/")
    assert form.status_code == 200
    assert 'name="owner"' not in form.content.decode()
    response = browser.post(
        "/admin/accounts/apikey/add/", {"owner": root.pk, "name": "escalate"}, follow=True
    )

    assert response.status_code == 200
    api_key = ApiKey.objects.get(name="escalate")
    assert api_key.owner.username == "clerk"
    assert not ApiKey.objects.filter(owner=root).exists()
    shown = [str(m) for m in response.context["messages"]]
    assert any(f"ptr_{api_key.prefix}." in message for message in shown)


def test_staff_who_may_change_users_choose_a_keys_owner(partner):
    browser = staff_with(*API_KEY_PERMISSIONS, "change_user", "view_user")

    assert 'name="owner"' in browser.get("/admin/accounts/apikey/add/").content.decode()
    browser.post("/admin/accounts/apikey/add/", {"owner": partner.pk, "name": "for-partner"})

    assert ApiKey.objects.get(name="for-partner").owner == partner
