"""Deactivation, "sign out everywhere" and role removal reach tokens and API keys that are
already out: every gateway process refuses them within about a second, from its in-memory copy
of the published deny-set, and the upstream sees none of those requests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django_redis.cache import RedisCache

from accounts import denylist
from accounts.denylist import deny_set
from accounts.models import User
from accounts.serializers import PortierTokenObtainSerializer
from accounts.services import api_key_issue
from routing.config.holder import holder
from routing.models import RolePolicy
from tests.conftest import make_route, make_service, publish, received
from tests.servers import ServerThread, free_port, gateway_processes

# The gateway's own threads read the users and keys: the test's data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

WITHIN = 2.0  # seconds: the poll interval (0.5 s) plus a load, with room for a slow machine


@pytest.fixture
def doctor() -> User:
    user = User.objects.create_user("ana", email="ana@example.com", password="correct horse 9")
    user.groups.add(Group.objects.create(name="doctor"))
    return user


@pytest.fixture
def doctors_route(upstream) -> None:
    policy = RolePolicy.objects.create(name="doctors", kind=RolePolicy.Kind.ANY_OF)
    policy.roles.set(Group.objects.filter(name="doctor"))
    make_route(make_service("records", upstream.url), "/records", role_policy=policy)
    publish()


def tokens_of(user: User) -> tuple[str, str]:
    """An access and a refresh token, as /auth/token issues them (with `iat`)."""
    refresh = PortierTokenObtainSerializer.get_token(user)
    return str(refresh.access_token), str(refresh)


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


def refused_within(
    call: Callable[[], httpx.Response], upstream: ServerThread, seconds: float = WITHIN
) -> httpx.Response:
    """The first answer that is not a 200, polled until `seconds` have passed. The requests
    accepted while the change spread are forgotten; the refusal must then hold, reaching nothing
    (the caller asserts the upstream saw nothing)."""
    deadline = time.monotonic() + seconds
    while (response := call()).status_code == 200:
        assert time.monotonic() < deadline, f"still accepted after {seconds} s"
        time.sleep(0.05)
    received(upstream).clear()
    again = call()
    assert again.status_code == response.status_code
    return again


def next_second() -> None:
    """Tokens carry whole seconds: one issued in the sign-out's own second is refused too."""
    time.sleep(1.05 - time.time() % 1)


def change_form_data(user: User, **changes: Any) -> dict[str, Any]:
    """What the admin's user page posts back, unchanged but for `changes` (an unchecked box is
    simply absent, as a browser sends it)."""
    joined = user.date_joined
    data: dict[str, Any] = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on" if user.is_active else "",
        "is_staff": "on" if user.is_staff else "",
        "groups": [str(pk) for pk in user.groups.values_list("pk", flat=True)],
        "date_joined_0": joined.strftime("%Y-%m-%d"),
        "date_joined_1": joined.strftime("%H:%M:%S"),
        "last_login_0": "",
        "last_login_1": "",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value not in ("", None)}


def test_deactivating_a_user_in_the_admin_stops_their_tokens_and_keys_within_a_second(
    admin_client, client, upstream, doctor, doctors_route
):
    access, _ = tokens_of(doctor)
    _, key = api_key_issue(owner=doctor, name="sync")
    assert client.get("/records/1", headers=bearer(access)).status_code == 200
    assert client.get("/records/1", headers={"X-API-Key": key}).status_code == 200
    received(upstream).clear()

    saved = admin_client.post(
        f"/admin/accounts/user/{doctor.pk}/change/", change_form_data(doctor, is_active="")
    )
    assert saved.status_code == 302, saved.content.decode()[:2000]

    by_token = refused_within(lambda: client.get("/records/1", headers=bearer(access)), upstream)
    by_key = refused_within(lambda: client.get("/records/1", headers={"X-API-Key": key}), upstream)
    assert (by_token.status_code, by_token.json()["error"]["code"]) == (401, "invalid_token")
    assert (by_key.status_code, by_key.json()["error"]["code"]) == (401, "invalid_api_key")
    assert received(upstream) == []


def test_the_admin_action_deactivates_selected_users(admin_client, client, upstream, doctor):
    make_route(make_service("open", upstream.url), "/open")
    publish()
    access, _ = tokens_of(doctor)
    assert client.get("/open", headers=bearer(access)).status_code == 200
    received(upstream).clear()

    admin_client.post(
        "/admin/accounts/user/", {"action": "deactivate", "_selected_action": [doctor.pk]}
    )

    assert not User.objects.get(pk=doctor.pk).is_active
    # Credentials sent to a public route are checked too: a deactivated user's token is a 401.
    response = refused_within(lambda: client.get("/open", headers=bearer(access)), upstream)
    assert response.status_code == 401
    assert received(upstream) == []


@pytest.fixture
def two_gateways(django_db_setup: Any) -> Iterator[list[str]]:
    """Two more gateway processes sharing this test run's Redis and nothing else, polling at the
    production interval (0.5 s): what they refuse, they learned from the published deny-set."""
    with gateway_processes(fast_poll=False) as urls:
        yield urls


def test_a_deactivation_reaches_two_other_gateway_processes_within_a_second(
    two_gateways, admin_client, upstream, doctor, doctors_route
):
    deadline = time.monotonic() + 5
    while not all(
        httpx.get(url + "/health", timeout=2).json()["config"]["token"] == holder.current.token
        for url in two_gateways
    ):
        assert time.monotonic() < deadline, "processes did not load the configuration"
        time.sleep(0.05)
    access, _ = tokens_of(doctor)
    for url in two_gateways:
        assert httpx.get(url + "/records/1", headers=bearer(access)).status_code == 200
    received(upstream).clear()

    admin_client.post(
        "/admin/accounts/user/", {"action": "deactivate", "_selected_action": [doctor.pk]}
    )

    for url in two_gateways:
        response = refused_within(
            lambda url=url: httpx.get(url + "/records/1", headers=bearer(access)), upstream
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_token"
    assert received(upstream) == []


def test_sign_out_everywhere_refuses_earlier_tokens_and_their_refresh(
    admin_client, client, upstream, doctor, doctors_route
):
    access, refresh = tokens_of(doctor)
    _, key = api_key_issue(owner=doctor, name="sync")
    assert client.get("/records/1", headers=bearer(access)).status_code == 200
    received(upstream).clear()

    page = admin_client.get(f"/admin/accounts/user/{doctor.pk}/change/")
    assert b"Sign out everywhere" in page.content
    admin_client.post(f"/admin/accounts/user/{doctor.pk}/sign-out-everywhere/")

    response = refused_within(lambda: client.get("/records/1", headers=bearer(access)), upstream)
    assert (response.status_code, response.json()["error"]["code"]) == (401, "invalid_token")
    assert received(upstream) == []
    renewed = client.post("/auth/token/refresh", json={"refresh": refresh})
    assert (renewed.status_code, renewed.json()["error"]["code"]) == (401, "invalid_token")
    # A key is a separate credential: signing out leaves it (revoke it, or deactivate the user).
    assert client.get("/records/1", headers={"X-API-Key": key}).status_code == 200
    # Signing in again gives tokens that work.
    next_second()
    pair = client.post("/auth/token", json={"username": "ana", "password": "correct horse 9"})
    assert client.get("/records/1", headers=bearer(pair.json()["access"])).status_code == 200


def test_the_admin_action_signs_selected_users_out(admin_client, client, upstream, doctor):
    make_route(make_service("open", upstream.url), "/open")
    publish()
    access, _ = tokens_of(doctor)

    admin_client.post(
        "/admin/accounts/user/",
        {"action": "sign_out_everywhere", "_selected_action": [doctor.pk]},
    )

    assert User.objects.get(pk=doctor.pk).tokens_valid_after is not None
    assert (
        refused_within(lambda: client.get("/open", headers=bearer(access)), upstream).status_code
        == 401
    )
    assert received(upstream) == []


def test_removing_a_role_in_the_admin_signs_the_user_out(
    admin_client, client, upstream, doctor, doctors_route
):
    access, _ = tokens_of(doctor)
    _, key = api_key_issue(owner=doctor, name="sync")
    assert client.get("/records/1", headers=bearer(access)).status_code == 200
    received(upstream).clear()

    saved = admin_client.post(
        f"/admin/accounts/user/{doctor.pk}/change/", change_form_data(doctor, groups=[])
    )
    assert saved.status_code == 302

    # The token still says "doctor", signed: it is refused as a whole.
    by_token = refused_within(lambda: client.get("/records/1", headers=bearer(access)), upstream)
    assert (by_token.status_code, by_token.json()["error"]["code"]) == (401, "invalid_token")
    # The key is looked up again with the roles the user has now.
    by_key = refused_within(lambda: client.get("/records/1", headers={"X-API-Key": key}), upstream)
    assert (by_key.status_code, by_key.json()["error"]["code"]) == (403, "forbidden")
    assert received(upstream) == []


def test_a_reactivated_user_signs_in_again(admin_client, client, upstream, doctor, doctors_route):
    doctor.is_active = False
    doctor.save()
    refused = client.post("/auth/token", json={"username": "ana", "password": "correct horse 9"})
    assert refused.status_code == 401

    doctor.is_active = True
    doctor.save()
    deadline = time.monotonic() + WITHIN
    while str(doctor.pk) in deny_set.current.inactive:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pair = client.post("/auth/token", json={"username": "ana", "password": "correct horse 9"})
    assert client.get("/records/1", headers=bearer(pair.json()["access"])).status_code == 200


def test_a_process_that_cannot_reach_the_cache_keeps_its_last_copy(doctor, monkeypatch):
    doctor.is_active = False
    doctor.save()
    deadline = time.monotonic() + WITHIN
    while str(doctor.pk) not in deny_set.current.inactive:
        assert time.monotonic() < deadline
        deny_set.refresh()  # as the process's refresher thread does
        time.sleep(0.05)
    held = deny_set.current
    dead = RedisCache(
        f"redis://127.0.0.1:{free_port()}/0",
        {"OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2}},
    )
    monkeypatch.setattr(denylist, "cache", dead)

    assert deny_set.refresh() is False

    assert deny_set.current is held
    assert deny_set.last_error is not None
    monkeypatch.setattr(denylist, "cache", cache)
    deny_set.refresh()
    assert deny_set.last_error is None
