"""A user's page in the admin: the routes the user can reach, their API keys, their sign-in
lockouts with "Clear sign-in lockout"; and "Revoke" on an API key's own page."""

from __future__ import annotations

import re
import time

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from accounts.models import ApiKey, User
from accounts.services import api_key_issue
from routing.models import RolePolicy
from tests.conftest import make_route, make_service, publish

PASSWORD = "correct horse 9"


def user_with_roles(username: str, *roles: str) -> User:
    user = User.objects.create_user(username, email=f"{username}@example.com", password=PASSWORD)
    user.groups.add(*(Group.objects.get_or_create(name=role)[0] for role in roles))
    return user


def policy(name: str, kind: str, *roles: str) -> RolePolicy:
    made = RolePolicy.objects.create(name=name, kind=kind)
    made.roles.set(Group.objects.get_or_create(name=role)[0] for role in roles)
    return made


def user_page(client: Client, user: User) -> str:
    response = client.get(f"/admin/accounts/user/{user.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def reachable(page: str) -> set[str]:
    return set(re.findall(r'<tr class="reachable-route" data-route="([^"]+)">', page))


@pytest.mark.django_db
def test_the_user_page_lists_the_routes_the_users_roles_reach(admin_client):
    user_with_roles("dora", "doctor")
    user_with_roles("nils", "nurse")
    user_with_roles("ops", "admin")
    service = make_service("clinic", "http://127.0.0.1:9001")
    make_route(service, "/public", name="open")
    make_route(service, "/me", name="me", role_policy=policy("signed-in", "authenticated"))
    make_route(
        service, "/records", name="records", role_policy=policy("doctors", "any_of", "doctor")
    )
    make_route(service, "/ward", name="ward", role_policy=policy("nurses", "any_of", "nurse"))
    make_route(
        service,
        "/handover",
        name="handover",
        methods="POST",
        role_policy=policy("both", "all_of", "doctor", "nurse"),
    )
    make_route(service, "/ops", name="ops", role_policy=policy("admins", "admin_only"))
    make_route(service, "/off", name="off", enabled=False)
    publish()

    doctor = user_page(admin_client, User.objects.get(username="dora"))
    nurse = user_page(admin_client, User.objects.get(username="nils"))
    admin = user_page(admin_client, User.objects.get(username="ops"))

    assert reachable(doctor) == {"open", "me", "records"}
    assert reachable(nurse) == {"open", "me", "ward"}
    assert reachable(admin) == {"open", "me", "ops"}
    row = re.search(r'data-route="records">(.*?)</tr>', doctor, re.S).group(1)
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
    assert cells == ["records", "any", "prefix /records", "any", "doctors (any of)"]
    assert 'id="reachable-routes"' in doctor


@pytest.mark.django_db
def test_an_inactive_user_reaches_only_public_routes(admin_client):
    user = user_with_roles("gone", "doctor")
    user.is_active = False
    user.save()
    service = make_service("clinic", "http://127.0.0.1:9001")
    make_route(service, "/public", name="open")
    make_route(service, "/records", name="records", role_policy=policy("d", "any_of", "doctor"))
    publish()

    page = user_page(admin_client, user)

    assert reachable(page) == {"open"}
    assert "The user is inactive" in page


@pytest.mark.django_db
def test_the_user_page_lists_the_users_api_keys_with_links(admin_client):
    user = user_with_roles("dora", "doctor")
    live, _ = api_key_issue(owner=user, name="lab-sync")
    old, _ = api_key_issue(owner=user, name="old-laptop")
    old.revoked_at = old.created_at
    old.save()
    api_key_issue(owner=user_with_roles("nils", "nurse"), name="not-hers")

    page = user_page(admin_client, user)

    section = page[page.index('id="user-api-keys"') :]
    assert f'href="/admin/accounts/apikey/{live.pk}/change/">lab-sync</a>' in section
    assert f"<code>{live.prefix}</code>" in section
    assert f'<tr class="api-key revoked" data-prefix="{old.prefix}">' in section
    assert "not-hers" not in page


def sign_in(username: str, password: str) -> int:
    response = Client(REMOTE_ADDR="198.51.100.7").post(
        "/auth/token", {"username": username, "password": password}, content_type="application/json"
    )
    return response.status_code


@pytest.mark.django_db
def test_a_lockout_shows_on_the_user_page_and_the_button_clears_it(admin_client, settings):
    settings.PORTIER_LOGIN_FAILURE_RATE = "5/d"  # a day: no window ends during the test
    settings.PORTIER_LOGIN_FAILURE_RATE_USER = "20/d"
    user = user_with_roles("dora", "doctor")
    assert "Not locked out." in user_page(admin_client, user)

    assert [sign_in("dora", "wrong") for _ in range(5)] == [401] * 5
    assert sign_in("dora", PASSWORD) == 429

    page = user_page(admin_client, user)
    assert 'id="lockout-warning"' in page
    section = page[page.index('id="sign-in-lockouts"') :]
    assert "<strong>Locked out:</strong>" in section
    rows = re.findall(r'<tr class="lockout-count( locked)?">(.*?)</tr>', section, re.S)
    cells = [
        ([re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", r, re.S)])
        for _, r in rows
    ]
    assert ["dora", "any address", "5 of 20"] in [c[:3] for c in cells]
    assert ["dora", "198.51.100.7", "5 of 5"] in [c[:3] for c in cells]

    followed = admin_client.get(f"/admin/accounts/user/{user.pk}/clear-sign-in-lockout/")
    assert followed.status_code == 405  # a link followed by accident clears nothing
    assert sign_in("dora", PASSWORD) == 429

    cleared = admin_client.post(f"/admin/accounts/user/{user.pk}/clear-sign-in-lockout/")

    assert cleared.status_code == 302
    page = user_page(admin_client, user)
    assert "Sign-in lockout cleared" in page
    assert "Not locked out." in page
    assert sign_in("dora", PASSWORD) == 200


@pytest.mark.django_db
def test_only_who_may_change_users_clears_a_lockout(settings):
    viewer = User.objects.create_user("vera", password="x", is_staff=True)
    viewer.user_permissions.add(*_perms("view_user"))
    client = Client()
    client.force_login(viewer)
    user = user_with_roles("dora", "doctor")

    page = user_page(client, user)

    assert 'id="sign-in-lockouts"' in page
    assert 'id="clear-sign-in-lockout"' not in page
    refused = client.post(f"/admin/accounts/user/{user.pk}/clear-sign-in-lockout/")
    assert refused.status_code == 403
    assert "You do not have permission" in refused.content.decode()


def _perms(*codenames: str) -> list[object]:
    from django.contrib.auth.models import Permission

    return list(Permission.objects.filter(codename__in=codenames))


@pytest.mark.django_db(transaction=True)  # the gateway's threads read the key from the database
def test_revoke_on_a_keys_page_revokes_it_and_the_gateway_refuses_it(
    admin_client, client, upstream
):
    owner = user_with_roles("dora", "doctor")
    make_route(
        make_service("clinic", upstream.url),
        "/records",
        role_policy=policy("doctors", "any_of", "doctor"),
    )
    publish()
    api_key, key = api_key_issue(owner=owner, name="lab-sync")
    assert client.get("/records/1", headers={"X-API-Key": key}).status_code == 200
    change = f"/admin/accounts/apikey/{api_key.pk}/change/"

    page = admin_client.get(change).content.decode()
    assert f'href="/admin/accounts/apikey/{api_key.pk}/revoke/"' in page
    assert 'id="revoke-api-key"' in page
    confirm = admin_client.get(f"/admin/accounts/apikey/{api_key.pk}/revoke/").content.decode()
    assert "Revoke the API key <strong>lab-sync</strong>" in confirm
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is None  # looking revokes nothing

    done = admin_client.post(f"/admin/accounts/apikey/{api_key.pk}/revoke/", follow=True)

    assert done.redirect_chain == [(change, 302)]
    page = done.content.decode()
    assert "API key revoked" in page
    assert 'id="revoke-api-key"' not in page  # already revoked: no button
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is not None
    deadline = time.monotonic() + 2.0
    while client.get("/records/1", headers={"X-API-Key": key}).status_code == 200:
        assert time.monotonic() < deadline, "revoked key still accepted after 2 s"
        time.sleep(0.05)
    assert client.get("/records/1", headers={"X-API-Key": key}).status_code == 401


@pytest.mark.django_db
def test_a_revoke_needs_a_post_and_the_change_permission(admin_client):
    api_key, _ = api_key_issue(owner=user_with_roles("dora", "doctor"), name="lab-sync")
    viewer = User.objects.create_user("vera", password="x", is_staff=True)
    viewer.user_permissions.add(*_perms("view_apikey"))
    client = Client()
    client.force_login(viewer)

    assert (
        'id="revoke-api-key"'
        not in client.get(f"/admin/accounts/apikey/{api_key.pk}/change/").content.decode()
    )
    assert client.post(f"/admin/accounts/apikey/{api_key.pk}/revoke/").status_code == 403
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is None
