"""The gateway's own token endpoints under /auth/, and their brute-force limit."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django_ratelimit.core import _get_window

from accounts.models import User
from routing.models import RolePolicy
from tests.conftest import make_route, make_service, publish, received

pytestmark = pytest.mark.django_db


@pytest.fixture
def doctor() -> User:
    user = User.objects.create_user("ana", email="ana@example.com", password="correct horse 9")
    user.groups.add(Group.objects.create(name="doctor"))
    return user


@pytest.fixture
def api() -> Client:
    return Client(REMOTE_ADDR="198.51.100.7")


def obtain(api: Client, username: str, password: str):
    return api.post(
        "/auth/token", {"username": username, "password": password}, content_type="application/json"
    )


def test_a_token_from_the_auth_endpoint_opens_a_route_by_its_roles(client, upstream, api, doctor):
    policy = RolePolicy.objects.create(name="doctors", kind=RolePolicy.Kind.ANY_OF)
    policy.roles.set(Group.objects.filter(name="doctor"))
    make_route(make_service("records", upstream.url), "/records", role_policy=policy)
    publish()

    pair = obtain(api, "ana", "correct horse 9").json()
    response = client.get("/records/1", headers={"Authorization": f"Bearer {pair['access']}"})

    assert response.status_code == 200
    seen = dict(received(upstream)[-1]["headers"])
    assert seen["x-user-id"] == str(doctor.pk)
    assert seen["x-user-email"] == "ana@example.com"
    assert seen["x-user-roles"] == "doctor"


def test_it_logs_in_by_email_too(api, doctor):
    response = obtain(api, "ANA@example.com", "correct horse 9")

    assert response.status_code == 200
    assert set(response.json()) == {"access", "refresh"}


def test_a_wrong_password_gets_the_standard_error(api, doctor):
    response = obtain(api, "ana", "wrong")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"
    assert "request_id" in response.json()["error"]


@pytest.fixture
def day_window(settings) -> None:
    """The default limit per day: fixed windows end at a time of their own, and a 15-minute one
    ending between the test's attempts (hashing makes them last seconds) would reset the count."""
    settings.PORTIER_LOGIN_FAILURE_RATE = "5/d"


def test_it_limits_failed_logins_per_username(api, doctor, day_window, settings):
    settings.PORTIER_LOGIN_FAILURE_RATE_USER = "5/d"
    statuses = [
        obtain(Client(REMOTE_ADDR=f"203.0.113.{i}"), "ana", "wrong").status_code for i in range(6)
    ]
    blocked = obtain(Client(REMOTE_ADDR="203.0.113.99"), "ana", "correct horse 9")

    assert statuses == [401] * 5 + [429]
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "rate_limited"
    assert 0 < int(blocked["Retry-After"]) <= 24 * 3600


def test_it_limits_failed_logins_per_ip(api, doctor, day_window, settings):
    settings.PORTIER_LOGIN_FAILURE_RATE_IP = "5/d"
    statuses = [obtain(api, f"user{i}", "wrong").status_code for i in range(6)]

    assert statuses == [401] * 5 + [429]


def test_successful_logins_are_not_counted(api, doctor):
    for _ in range(8):
        assert obtain(api, "ana", "correct horse 9").status_code == 200

    assert [obtain(api, "ana", "wrong").status_code for _ in range(5)] == [401] * 5


def test_the_failure_limit_resets_after_its_window(api, doctor, settings):
    settings.PORTIER_LOGIN_FAILURE_RATE = "2/4s"
    # Windows are fixed (django-ratelimit's): _get_window names the last whole second of the
    # current window, so the next one opens a second later. Start there, or on a slow machine the
    # third attempt can fall into the next window and be counted afresh.
    next_opens = _get_window("ana|198.51.100.7", 4) + 1
    time.sleep(max(0.0, next_opens - time.time()) + 0.05)
    assert [obtain(api, "ana", "wrong").status_code for _ in range(3)] == [401, 401, 429]

    deadline = time.monotonic() + 8
    while obtain(api, "ana", "correct horse 9").status_code == 429:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_refresh_rotates_and_the_old_refresh_token_is_blacklisted(api, doctor):
    pair = obtain(api, "ana", "correct horse 9").json()

    rotated = api.post(
        "/auth/token/refresh", {"refresh": pair["refresh"]}, content_type="application/json"
    )
    reused = api.post(
        "/auth/token/refresh", {"refresh": pair["refresh"]}, content_type="application/json"
    )

    assert rotated.status_code == 200
    assert rotated.json()["refresh"] != pair["refresh"]
    assert reused.status_code == 401
    assert reused.json()["error"]["code"] == "invalid_token"


def test_logout_blacklists_the_refresh_token(api, doctor):
    pair = obtain(api, "ana", "correct horse 9").json()

    logout = api.post("/auth/logout", {"refresh": pair["refresh"]}, content_type="application/json")
    refresh = api.post(
        "/auth/token/refresh", {"refresh": pair["refresh"]}, content_type="application/json"
    )

    assert logout.status_code == 205
    assert refresh.status_code == 401


def test_verify_accepts_a_valid_token_and_refuses_a_bad_one(api, doctor):
    pair = obtain(api, "ana", "correct horse 9").json()

    good = api.post(
        "/auth/token/verify", {"token": pair["access"]}, content_type="application/json"
    )
    bad = api.post(
        "/auth/token/verify", {"token": pair["access"][:-2] + "xx"}, content_type="application/json"
    )

    assert good.status_code == 200
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "invalid_token"
