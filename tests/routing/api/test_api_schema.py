"""The management API's OpenAPI 3 schema (/admin/api/schema/) and its docs page
(/admin/api/docs/): for staff only, the schema valid, the page served with its own static files
(no CDN), and a browser session that uses it held to CSRF."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client as DjangoClient
from django.utils.crypto import get_random_string
from drf_spectacular.validation import validate_schema

from accounts.models import User
from accounts.serializers import PortierTokenObtainSerializer
from routing.models import Service

pytestmark = pytest.mark.django_db(transaction=True)


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {PortierTokenObtainSerializer.get_token(user).access_token}"}


@pytest.fixture
def admin_user() -> User:
    return User.objects.create_superuser("root", email="root@example.com", password="pw-9x-long")


def session_of(user: User) -> dict[str, str]:
    """The cookie of a signed-in browser session (sessions live where the gateway reads them)."""
    browser = DjangoClient()
    browser.force_login(user)
    return {settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value}


def test_the_schema_is_valid_openapi_3_of_the_management_api_only(client, admin_user):
    response = client.get("/admin/api/schema/?format=json", headers=bearer(admin_user))
    assert response.status_code == 200, response.text
    schema = response.json()
    validate_schema(schema)  # raises on an invalid OpenAPI 3 document
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    assert {
        "/admin/api/services/{name}/",
        "/admin/api/routes/{name}/",
        "/admin/api/policies/{name}/",
        "/admin/api/tiers/{name}/",
        "/admin/api/api-keys/{prefix}/",
        "/admin/api/audit/",
        "/admin/api/history/{kind}/",
        "/admin/api/config",
    } <= paths
    assert all(p.startswith("/admin/api/") for p in paths)  # not /auth/ nor /registry/
    assert {"bearerAuth", "apiKeyAuth"} <= set(schema["components"]["securitySchemes"])


def test_the_schema_and_docs_are_for_staff_only(client, admin_user):
    plain = User.objects.create_user("paul", email="paul@example.com")
    auditor = User.objects.create_user("olga", email="olga@example.com", is_staff=True)
    auditor.groups.add(Group.objects.get_or_create(name="Auditor")[0])
    for page in ("/admin/api/schema/", "/admin/api/docs/"):
        anonymous = client.get(page)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "missing_credentials"
        assert client.get(page, headers=bearer(plain)).status_code == 403
        assert client.get(page, headers=bearer(auditor)).status_code == 200


def test_the_docs_page_loads_its_scripts_from_the_gateway_not_a_cdn(client, admin_user):
    client.cookies.update(session_of(admin_user))
    page = client.get("/admin/api/docs/")
    assert page.status_code == 200
    assert "text/html" in page.headers["Content-Type"]
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page.text)
    assert "cdn" not in page.text.lower()
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    scripts = [url for url in assets if url.endswith(".js")]
    assert len(scripts) >= 2  # swagger-ui-bundle.js and its standalone preset
    for url in assets:
        served = client.get(url)
        assert served.status_code == 200, url
    assert "javascript" in client.get(scripts[0]).headers["Content-Type"]
    # The page reads the schema with the same session.
    schema = client.get("/admin/api/schema/")
    assert schema.status_code == 200
    assert "openapi: 3" in schema.text


def test_a_browser_session_must_send_the_csrf_token_to_change_anything(client, admin_user):
    client.cookies.update(session_of(admin_user))
    body = {"name": "users", "targets": [{"url": "http://127.0.0.1:9"}]}
    forged = client.post("/admin/api/services/", json=body)
    assert forged.status_code == 403
    assert "CSRF" in forged.json()["error"]["message"]
    assert not Service.objects.exists()

    token = get_random_string(32)  # a CSRF secret, as the cookie holds it
    client.cookies.set(settings.CSRF_COOKIE_NAME, token)
    sent = client.post("/admin/api/services/", json=body, headers={"X-CSRFToken": token})
    assert sent.status_code == 201, sent.text
    assert Service.objects.get(name="users").history.first().history_user == admin_user
