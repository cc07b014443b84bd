"""The admin's layout (routing.admin_index, the service pages, the 403 page): the index in the
order people use it with the history gathered in one place, the service list's health badges
from the live health board, the service form's targets before its folded tuning, and a refused
admin page that stays in the admin while the management API still answers JSON."""

from __future__ import annotations

import json
import re

import pytest

from tests.audit.conftest import auditor, auditor_client  # noqa: F401 (fixtures)
from tests.conftest import make_route, make_service, publish
from tests.routing.test_admin import served_within

pytestmark = pytest.mark.django_db

HISTORY_PAGES = {
    "API key changes",
    "Gateway defaults changes",
    "Rate-limit tier changes",
    "Role policy changes",
    "Route changes",
    "Route tier override changes",
    "Service changes",
    "Target changes",
}


def sections(page: str) -> list[tuple[str, str, list[str]]]:
    """(app label, caption, row names) of each section of the index, in order."""
    found = []
    for label, body in re.findall(
        r'<div class="app-([\w-]+) module[^"]*">(.*?)</table>', page, re.S
    ):
        caption = re.search(r'<a href="[^"]*" class="section"[^>]*>(.*?)</a>', body, re.S)
        rows = re.findall(r'<th scope="row"[^>]*>\s*(?:<a [^>]*>)?([^<]+?)\s*<', body)
        found.append((label, caption.group(1).strip() if caption else "", rows))
    return found


def test_the_index_puts_gateway_routing_first_and_gathers_the_history(admin_client):
    page = admin_client.get("/admin/").content.decode()

    found = sections(page)
    assert [label for label, _, _ in found] == [
        "routing",
        "accounts",
        "audit",
        "history",
        "token_blacklist",
    ]
    by_label = {label: (caption, rows) for label, caption, rows in found}
    assert by_label["routing"] == (
        "Gateway routing",
        [
            "Routes",
            "Services",
            "Role policies",
            "Rate limit tiers",
            "Route tester",
            "Gateway defaults",
            "Configuration timeline",
            "Targets",
        ],
    )
    assert by_label["accounts"] == ("Accounts and roles", ["Users", "API keys", "Groups"])
    assert by_label["audit"] == ("Audit trail", ["Audit entries"])
    assert by_label["history"][0] == "History"
    assert set(by_label["history"][1]) == HISTORY_PAGES
    assert "Authentication and Authorization" not in page


def test_the_history_section_has_a_page_linking_every_change_list(admin_client):
    index = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/history/" class="section"' in index

    page = admin_client.get("/admin/history/")

    assert page.status_code == 200
    html = page.content.decode()
    content = html[html.index('id="content-main"') :]  # after the sidebar's own list
    assert [label for label, _, _ in sections(content)] == ["history"]
    assert set(sections(content)[0][2]) == HISTORY_PAGES
    assert 'href="/admin/audit/historicalroute/"' in html


def test_an_auditor_sees_the_trail_and_the_history_but_no_routing(auditor_client):  # noqa: F811
    found = sections(auditor_client.get("/admin/").content.decode())

    assert [label for label, _, _ in found] == ["audit", "history"]
    assert auditor_client.get("/admin/history/").status_code == 200


@pytest.fixture
def probed() -> dict[str, object]:
    """Active health checks fast enough for a test to see their verdict."""
    return {
        "health_path": "/healthz",
        "health_interval": 0.3,
        "health_timeout": 0.2,
        "healthy_threshold": 1,
        "unhealthy_threshold": 1,
    }


def badge(page: str, service: str) -> str:
    """The health badge's text on the service list's row of `service`."""
    row = re.search(rf">{re.escape(service)}</a></th>(.*?)</tr>", page, re.S)
    assert row, f"no row for {service}"
    found = re.search(r'<span class="portier-badge (\w+)"[^>]*>([^<]*)</span>', row.group(1))
    assert found, f"no badge on the row of {service}"
    return f"{found.group(1)} {found.group(2)}"


def test_the_service_list_shows_live_health_badges(
    gateway, admin_client, upstream, dead_url, probed
):
    # The badges read this process's health board; the gateway's lifespan runs its monitor.
    make_service("all-up", upstream.url, **probed)
    make_service("half-down", upstream.url, dead_url, **probed)
    make_service("unprobed", upstream.url)
    publish()
    make_service("unpublished", upstream.url)

    def checked() -> bool:
        page = admin_client.get("/admin/routing/service/").content.decode()
        return badge(page, "all-up") == "good 1/1 healthy" and "bad" in badge(page, "half-down")

    assert served_within(checked, seconds=10) < float("inf")
    page = admin_client.get("/admin/routing/service/").content.decode()
    assert badge(page, "all-up") == "good 1/1 healthy"
    assert badge(page, "half-down") == "bad 1/2 healthy"
    assert badge(page, "unprobed") == "muted unknown"  # no active checks: not claimed healthy
    assert badge(page, "unpublished") == "muted unknown"


def test_the_service_form_shows_the_targets_before_the_folded_tuning(admin_client, upstream):
    service = make_service("shop", upstream.url)

    page = admin_client.get(f"/admin/routing/service/{service.pk}/change/").content.decode()

    health = page.index("Targets in service")
    inline = page.index('id="targets-group"')
    tuning = page.index(">Retries and timeouts<")
    assert health < inline < tuning
    for title in (
        "Balancing",
        "Active health checks",
        "Circuit breaker (passive health checks)",
        "Retries and timeouts",
        "Registration",
    ):
        folded = re.search(rf"<details[^>]*>\s*<summary>\s*<h2[^>]*>{re.escape(title)}</h2>", page)
        assert folded, f"{title} is not folded"
    assert not re.search(r"<details[^>]*>\s*<summary>\s*<h2[^>]*>Targets in service", page)


def test_the_route_list_shows_policy_tier_and_an_enabled_box(admin_client):
    from routing.models import RateLimitTier, RolePolicy

    route = make_route(make_service("users", "http://127.0.0.1:9001"), "/users", name="users")
    route.role_policy = RolePolicy.objects.create(name="staff", kind="authenticated")
    route.rate_limit_tier = RateLimitTier.objects.create(name="basic", rate="100/m")
    route.save()

    page = admin_client.get("/admin/routing/route/").content.decode()

    headers = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', page)
    assert headers == [  # the action checkbox's column has none of these names
        "name",
        "match",
        "methods_display",
        "service",
        "policy",
        "tier",
        "enabled",
    ]
    assert '<td class="field-policy">staff</td>' in page
    assert '<td class="field-tier">basic (100/m)</td>' in page
    assert 'name="form-0-enabled"' in page


def test_an_auditor_refused_a_route_page_stays_in_the_admin_with_a_way_back(
    auditor_client,  # noqa: F811
):
    route = make_route(make_service("users", "http://127.0.0.1:9001"), "/users", name="users")

    response = auditor_client.get(
        f"/admin/routing/route/{route.pk}/change/",
        headers={"referer": "http://testserver/admin/audit/auditentry/"},
    )

    assert response.status_code == 403
    assert response["content-type"].startswith("text/html")
    page = response.content.decode()
    assert "Portier gateway" in page  # the admin's header
    assert 'id="user-tools"' in page and "audrey" in page
    assert "You do not have permission" in page
    assert '<a href="/admin/" id="back-to-index">' in page
    assert 'href="http://testserver/admin/audit/auditentry/" id="back-to-previous"' in page


def test_a_refused_page_offers_no_way_back_to_another_site(auditor_client):  # noqa: F811
    route = make_route(make_service("users", "http://127.0.0.1:9001"), "/users", name="users")

    page = auditor_client.get(
        f"/admin/routing/route/{route.pk}/change/", headers={"referer": "https://evil.example/"}
    ).content.decode()

    assert "evil.example" not in page
    assert 'id="back-to-index"' in page


def test_the_management_api_still_refuses_in_json(auditor_client):  # noqa: F811
    response = auditor_client.get("/admin/api/routes")

    assert response.status_code == 403
    assert response.json()["error"]["code"]
    assert "<html" not in response.content.decode()


def test_a_refusal_outside_the_admin_is_json_for_anyone():
    from django.test import RequestFactory

    from gateway_site.errors import permission_denied

    request = RequestFactory().get("/admin/routing/route/")  # no signed-in staff
    response = permission_denied(request)

    assert response.status_code == 403
    assert response["content-type"] == "application/json"
    assert json.loads(response.content)["error"]["code"] == "forbidden"
