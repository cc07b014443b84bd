"""CORS on the gateway's own APIs (/auth/, /admin/api/, /api-docs) follows the gateway-wide
setting, served by the running gateway: preflights answered before sign-in, a disallowed origin
refused without Access-Control-Allow-* headers, the admin's HTML pages never covered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from routing.models import GatewayDefaults
from tests.conftest import publish

pytestmark = pytest.mark.django_db

APP = "https://app.example.com"


@pytest.fixture
def gateway_cors() -> Iterator[None]:
    GatewayDefaults.objects.update_or_create(
        pk=1,
        defaults={
            "cors": {
                "origins": [APP],
                "credentials": True,
                "headers": ["Authorization", "Content-Type"],
                "max_age": 300,
            }
        },
    )
    publish()
    yield
    GatewayDefaults.objects.filter(pk=1).delete()
    publish()


def preflight(client, path: str, origin: str):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )


@pytest.mark.parametrize("path", ["/auth/token/", "/admin/api/routes", "/api-docs"])
def test_preflight_to_the_gateways_own_apis_is_answered_for_an_allowed_origin_uncredentialed(
    client, gateway_cors, path
) -> None:
    answer = preflight(client, path, APP)
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == APP
    # Never credentialed, whatever the gateway-wide block says: the management API also takes
    # the admin's session cookie, which another site must not be able to spend.
    assert "access-control-allow-credentials" not in answer.headers
    assert answer.headers["access-control-allow-headers"] == "Authorization, Content-Type"
    assert answer.headers["access-control-max-age"] == "300"


@pytest.mark.parametrize(
    "origin", ["https://app.example.com.evil.com", "null", "http://app.example.com"]
)
def test_a_disallowed_origin_gets_403_and_no_allow_headers(client, gateway_cors, origin) -> None:
    answer = preflight(client, "/auth/token/", origin)
    assert answer.status_code == 403
    body = answer.json()["error"]
    assert body["code"] == "origin_not_allowed" and body["request_id"]
    assert not [h for h in answer.headers if h.startswith("access-control-allow")]
    assert "Origin" in answer.headers["vary"]


def test_an_api_answer_carries_the_allow_headers_and_keeps_its_own_vary(
    client, gateway_cors
) -> None:
    answer = client.get("/admin/api/routes", headers={"Origin": APP})
    assert answer.status_code in (401, 403)  # no credentials: refused, but readable by the app
    assert answer.headers["access-control-allow-origin"] == APP
    assert "Origin" in answer.headers["vary"]


def test_the_admin_pages_and_a_gateway_without_cors_send_none(client, gateway_cors) -> None:
    page = client.get("/admin/login/", headers={"Origin": APP})
    assert "access-control-allow-origin" not in page.headers
    GatewayDefaults.objects.filter(pk=1).update(cors=None)
    publish()
    answer = client.get("/admin/api/routes", headers={"Origin": APP})
    assert "access-control-allow-origin" not in answer.headers
    assert preflight(client, "/auth/token/", APP).status_code != 204
