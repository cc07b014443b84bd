"""Sign-in at the edge: bodies that are not JSON objects, the failed sign-in limit counted per
username and IP, per username and per IP (shared by /auth/token and the admin's login form), and
the request id in every error the gateway's own endpoints answer."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client, RequestFactory

from accounts.models import User
from gateway_site.errors import server_error

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse 9"


@pytest.fixture
def ana() -> User:
    user = User.objects.create_user("ana", email="ana@example.com", password=PASSWORD)
    user.groups.add(Group.objects.create(name="doctor"))
    return user


@pytest.fixture
def bounds(settings) -> None:
    """Small bounds, per day (a window ending between two attempts would reset a count)."""
    settings.PORTIER_LOGIN_FAILURE_RATE = "3/d"  # per username and IP
    settings.PORTIER_LOGIN_FAILURE_RATE_USER = "6/d"  # per username, any IP
    settings.PORTIER_LOGIN_FAILURE_RATE_IP = "8/d"  # per IP, any username


def sign_in(ip: str, username: str, password: str) -> int:
    response = Client(REMOTE_ADDR=ip).post(
        "/auth/token", {"username": username, "password": password}, content_type="application/json"
    )
    return response.status_code


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    "path", ["/auth/token", "/auth/logout", "/auth/token/refresh", "/auth/token/verify"]
)
@pytest.mark.parametrize(
    "body", ["[]", '["ana", "pw"]', '[{"username": "ana"}]', '"ana"', "42", "1.5", "true", "null"]
)
def test_a_body_that_is_not_a_json_object_is_a_400(client, path, body):
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})

    assert_error(response, 400, "invalid_request")


def test_five_typos_behind_one_ip_do_not_lock_out_the_others_there(ana, bounds):
    office = "203.0.113.10"
    User.objects.create_user("bob", password="bobs own 12")

    typos = [sign_in(office, "bob", "wrong") for _ in range(4)]

    assert typos == [401, 401, 401, 429]
    assert sign_in(office, "bob", "bobs own 12") == 429  # bob, from there, waits
    assert sign_in(office, "ana", PASSWORD) == 200  # his colleague does not


def test_an_account_under_attack_still_opens_from_a_new_ip_until_the_username_bound(ana, bounds):
    attempts = [sign_in(f"198.51.100.{i}", "ana", "wrong") for i in range(5)]
    assert attempts == [401] * 5

    assert sign_in("192.0.2.1", "ana", PASSWORD) == 200  # 5 failures: under the bound of 6

    assert sign_in("198.51.100.9", "ana", "wrong") == 401  # the sixth
    assert sign_in("192.0.2.2", "ana", PASSWORD) == 429  # now locked from everywhere
    assert sign_in("192.0.2.3", "someone-else", "x") == 401  # other accounts are not


def test_one_ip_trying_many_accounts_is_stopped_at_the_ip_bound(ana, bounds):
    sprayer = "203.0.113.66"
    attempts = [sign_in(sprayer, f"user{i}", "wrong") for i in range(9)]

    assert attempts == [401] * 8 + [429]
    assert sign_in(sprayer, "ana", PASSWORD) == 429
    assert sign_in("203.0.113.67", "ana", PASSWORD) == 200


def test_behind_a_trusted_load_balancer_each_client_is_counted_apart(ana, bounds, settings):
    settings.PORTIER_TRUSTED_PROXIES = ["10.0.0.0/8"]

    def through_balancer(client_ip: str, username: str, password: str) -> int:
        return (
            Client(REMOTE_ADDR="10.0.0.2")
            .post(
                "/auth/token",
                {"username": username, "password": password},
                content_type="application/json",
                HTTP_X_FORWARDED_FOR=client_ip,
            )
            .status_code
        )

    sprayed = [through_balancer("203.0.113.66", f"user{i}", "wrong") for i in range(9)]

    assert sprayed == [401] * 8 + [429]  # the sprayer reaches the per-IP bound...
    assert through_balancer("203.0.113.67", "ana", PASSWORD) == 200  # ...not everyone behind it
    # An untrusted peer cannot pick its address to escape the bound.
    assert sign_in("203.0.113.66", "ana", PASSWORD) == 429
    assert (
        Client(REMOTE_ADDR="203.0.113.66")
        .post(
            "/auth/token",
            {"username": "ana", "password": PASSWORD},
            content_type="application/json",
            HTTP_X_FORWARDED_FOR="192.0.2.99",
        )
        .status_code
        == 429
    )


def test_the_refusal_says_when_to_come_back(ana, bounds):
    for _ in range(3):
        sign_in("203.0.113.5", "ana", "wrong")

    response = Client(REMOTE_ADDR="203.0.113.5").post(
        "/auth/token", {"username": "ana", "password": PASSWORD}, content_type="application/json"
    )

    assert_error(response, 429, "rate_limited")
    assert 0 < int(response["Retry-After"]) <= 24 * 3600


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("root", password=PASSWORD, is_staff=True, is_superuser=True)


def admin_sign_in(browser: Client, password: str):
    return browser.post(
        "/admin/login/?next=/admin/", {"username": "root", "password": password}, follow=False
    )


def test_the_admin_login_counts_failures_with_auth_token_and_answers_in_its_own_page(staff, bounds):
    browser = Client(REMOTE_ADDR="203.0.113.20")
    assert sign_in("203.0.113.20", "root", "wrong") == 401
    assert sign_in("203.0.113.20", "root", "wrong") == 401
    wrong = admin_sign_in(browser, "wrong")
    assert wrong.status_code == 200
    assert "Please enter the correct username and password" in wrong.content.decode()

    refused = admin_sign_in(browser, PASSWORD)

    assert refused.status_code == 200
    assert refused["Content-Type"].startswith("text/html")
    assert "Too many failed sign-ins" in refused.content.decode()
    assert "_auth_user_id" not in browser.session
    assert sign_in("203.0.113.20", "root", PASSWORD) == 429
    # Elsewhere, the right password still opens the admin.
    elsewhere = Client(REMOTE_ADDR="192.0.2.50")
    assert admin_sign_in(elsewhere, PASSWORD).status_code == 302
    assert "_auth_user_id" in elsewhere.session


def test_admin_login_failures_alone_reach_the_bound(staff, bounds):
    browser = Client(REMOTE_ADDR="203.0.113.21")
    for _ in range(3):
        admin_sign_in(browser, "wrong")

    assert "Too many failed sign-ins" in admin_sign_in(browser, PASSWORD).content.decode()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/auth/nope", None, 404, "not_found"),
        ("GET", "/auth/token", None, 405, "method_not_allowed"),
        ("POST", "/auth/token", '{"username": "x", "password": "y"}', 401, "invalid_credentials"),
        ("POST", "/auth/token", "{not json", 400, "invalid_request"),
        ("POST", "/auth/token", "[]", 400, "invalid_request"),
        ("POST", "/auth/logout", "{}", 400, "invalid_request"),
        ("POST", "/auth/token/verify", '{"token": "x.y.z"}', 401, "invalid_token"),
        ("GET", "/registry/services/nothing/instances", None, 401, "missing_credentials"),
        ("GET", "/registry/nope", None, 404, "not_found"),
        ("GET", "/health/nope", None, 404, "not_found"),
    ],
)
@pytest.mark.parametrize("sent", [None, "client-id-42", "not a sane id!"])
def test_every_error_of_the_gateways_own_endpoints_carries_the_request_id(
    client, method, path, body, status, code, sent
):
    headers = {"Content-Type": "application/json"}
    if sent is not None:
        headers["X-Request-ID"] = sent

    response = client.request(method, path, content=body, headers=headers)

    assert_error(response, status, code)
    if sent == "client-id-42":
        assert response.json()["error"]["request_id"] == "client-id-42"
    else:
        assert response.json()["error"]["request_id"] != sent


def test_the_500_page_carries_the_request_id():
    request = RequestFactory().get("/auth/token", HTTP_X_REQUEST_ID="abc-123")

    response = server_error(request)

    assert response.status_code == 500
    assert response["X-Request-ID"] == "abc-123"
    assert b'"request_id": "abc-123"' in response.content
