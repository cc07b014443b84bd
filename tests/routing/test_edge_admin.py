"""The edge options in the admin: the route page's collapsed edge section saves a route's
transform, CORS, security headers, HTTPS redirect, compression and IP lists with the model's
validation, and the gateway defaults are one page that cannot be added twice nor deleted, whose
save publishes a new configuration version."""

from __future__ import annotations

import html
import json
import re

import pytest

from routing.models import ConfigVersion, GatewayDefaults, Route
from tests.conftest import make_route, make_service, publish
from tests.routing.test_admin import route_form

CORS = {"origins": ["https://app.example.com"], "credentials": True, "max_age": 600}
TRANSFORM = {"request": {"headers": {"set": {"X-Tenant": "acme"}, "remove": ["X-Debug"]}}}
DEFAULTS_URL = "/admin/routing/gatewaydefaults/"


def defaults_form(**fields: str) -> dict[str, str]:
    """The gateway defaults page as the browser posts it (an unchecked box is left out)."""
    data = {"cors": "", "security_headers": "{}", "compression_min_bytes": "1024", **fields}
    return {key: value for key, value in data.items() if value is not None}


# --- The route page ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_route_page_has_a_collapsed_edge_section_with_readable_json(admin_client):
    route = make_route(
        make_service("users", "http://127.0.0.1:9"), "/users", name="users", transform=TRANSFORM
    )

    page = admin_client.get(f"/admin/routing/route/{route.pk}/change/").content.decode()

    section = re.search(
        r'<fieldset[^>]*class="[^"]*collapse[^"]*"[^>]*>(.*?)</fieldset>', page, re.S
    )
    assert section is not None
    edge = section.group(1)
    assert "Edge: transforms, CORS, security headers, HTTPS, IP lists, compression" in edge
    for name in ("transform", "cors", "security_headers", "ip_allow", "ip_deny"):
        assert re.search(rf'<textarea[^>]*name="{name}"[^>]*monospace', edge), name
    shown = re.search(r'<textarea[^>]*name="transform"[^>]*>(.*?)</textarea>', edge, re.S)
    assert json.loads(html.unescape(shown.group(1))) == TRANSFORM
    assert '\n  "request": {\n' in html.unescape(shown.group(1))  # indented, one key a line
    cors = re.search(r'<textarea[^>]*name="cors"[^>]*>(.*?)</textarea>', edge, re.S)
    assert cors.group(1).strip() == ""  # inherits: an empty box, not "null"
    redirect = re.search(r'<select[^>]*name="https_redirect"[^>]*>(.*?)</select>', edge, re.S)
    options = re.findall(r"<option[^>]*>([^<]*)</option>", redirect.group(1))
    assert options == ["Unknown", "Yes", "No"]


@pytest.mark.django_db
def test_the_route_form_saves_the_edge_options(admin_client):
    service = make_service("users", "http://127.0.0.1:9")
    form = route_form(
        name="users",
        service=service.pk,
        path="/users",
        transform=json.dumps(TRANSFORM, indent=2),
        cors="false",
        security_headers="",
        https_redirect="true",
        compression="unknown",
        ip_allow='["10.0.0.0/8", "192.0.2.7"]',
        ip_deny="",
    )

    response = admin_client.post("/admin/routing/route/add/", form)

    assert response.status_code == 302, response.content.decode()[:3000]
    route = Route.objects.get(name="users")
    assert route.transform == TRANSFORM
    assert (route.cors, route.security_headers) == (False, None)
    assert (route.https_redirect, route.compression) == (True, None)
    assert (route.ip_allow, route.ip_deny) == (["10.0.0.0/8", "192.0.2.7"], [])


@pytest.mark.django_db
def test_an_emptied_transform_box_means_no_transform(admin_client):
    route = make_route(
        make_service("users", "http://127.0.0.1:9"), "/users", name="users", transform=TRANSFORM
    )
    form = route_form(name="users", service=route.service_id, path="/users", transform="")

    response = admin_client.post(f"/admin/routing/route/{route.pk}/change/", form)

    assert response.status_code == 302, response.content.decode()[:3000]
    assert Route.objects.get(name="users").transform == {}


@pytest.mark.django_db
def test_the_route_form_refuses_a_bad_cors_block_with_the_reason(admin_client):
    service = make_service("users", "http://127.0.0.1:9")
    bad = json.dumps({"origins": ["*"], "credentials": True})
    form = route_form(name="users", service=service.pk, path="/users", cors=bad)

    response = admin_client.post("/admin/routing/route/add/", form)

    assert response.status_code == 200  # the form again
    page = html.unescape(response.content.decode())
    assert "origins: `*` cannot be combined with credentials" in page
    assert '"credentials": true' in page  # what was typed stays in the box
    assert not Route.objects.exists()


# --- The gateway defaults page -------------------------------------------------------------


@pytest.mark.django_db
def test_the_defaults_list_opens_the_built_in_values_unwritten_then_the_one_row(admin_client):
    response = admin_client.get(DEFAULTS_URL)

    # Never saved: the add page shows the built-in values, and looking wrote nothing.
    assert response.status_code == 302
    assert response.url == f"{DEFAULTS_URL}add/"
    assert not GatewayDefaults.objects.exists()
    page = admin_client.get(response.url).content.decode()
    assert 'name="compression_min_bytes" value="1024"' in page

    saved = admin_client.post(f"{DEFAULTS_URL}add/", defaults_form(compression="on"))

    assert saved.status_code == 302, saved.content.decode()[:3000]
    assert GatewayDefaults.objects.get().compression is True
    response = admin_client.get(DEFAULTS_URL)
    assert response.url == f"{DEFAULTS_URL}1/change/"
    page = admin_client.get(response.url)
    assert page.status_code == 200
    assert 'name="security_headers"' in page.content.decode()


@pytest.mark.django_db
def test_the_defaults_are_never_added_twice_nor_deleted(admin_client):
    GatewayDefaults.load()  # the row, saved once

    page = admin_client.get(f"{DEFAULTS_URL}1/change/").content.decode()

    assert "deletelink" not in page
    assert "_addanother" not in page
    assert admin_client.get(f"{DEFAULTS_URL}add/").status_code == 403
    assert admin_client.post(f"{DEFAULTS_URL}1/delete/", {"post": "yes"}).status_code == 403
    assert GatewayDefaults.objects.count() == 1
    index = admin_client.get("/admin/").content.decode()
    assert f'href="{DEFAULTS_URL}add/"' not in index


@pytest.mark.django_db(transaction=True)
def test_saving_the_defaults_publishes_a_new_configuration_version(admin_client):
    GatewayDefaults.load()
    publish()
    before = ConfigVersion.objects.get().number

    response = admin_client.post(
        f"{DEFAULTS_URL}1/change/",
        defaults_form(cors=json.dumps(CORS), https_redirect="on", compression="on"),
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    saved = GatewayDefaults.objects.get()
    assert (saved.cors, saved.https_redirect, saved.compression) == (CORS, True, True)
    assert ConfigVersion.objects.get().number == before + 1
    history = admin_client.get("/admin/audit/historicalgatewaydefaults/").content.decode()
    assert "https://app.example.com" in html.unescape(history)


@pytest.mark.django_db
def test_the_defaults_page_refuses_bad_blocks_with_the_reason(admin_client):
    GatewayDefaults.load()

    response = admin_client.post(
        f"{DEFAULTS_URL}1/change/",
        defaults_form(cors="false", security_headers='{"frame_options": "ALLOW"}'),
    )

    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert "Write CORS as an object" in page
    assert "frame_options: 'ALLOW' is not one of" in page
    saved = GatewayDefaults.objects.get()
    assert (saved.cors, saved.security_headers) == (None, {})
