"""An admin asks the route tester what the gateway would do with a request, and reads which
route matched and which target it would be sent to."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from accounts.models import User
from tests.browser.conftest import assert_fits_the_width, keep_screenshot, log_in
from tests.conftest import make_route, make_service, publish
from tests.servers import ServerThread

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_shows_the_matching_route_and_target(
    page: Page, admin: User, upstream: ServerThread
) -> None:
    service = make_service("users", upstream.url)
    make_route(service, "/users", name="users", strip_prefix=True)
    make_route(service, "/users/admin", name="users-admin")
    publish()
    log_in(page, admin)

    page.get_by_role("link", name="Route tester").click()
    expect(page.get_by_role("heading", name="Route tester")).to_be_visible()
    page.get_by_label("Method").fill("GET")
    page.get_by_label("Host").fill("api.example.com")
    page.get_by_label("Path").fill("/users/7?full=1")
    page.get_by_role("button", name="Test").click()

    report = page.locator("#tester-report")
    expect(report.locator(".outcome")).to_contain_text("Forwarded to the upstream.")
    expect(report.locator("tr.won")).to_contain_text("users")
    expect(report.locator("tr.won")).to_contain_text("matched")
    expect(report.locator(".upstream-path")).to_have_text("/7")
    expect(report.locator(".picked")).to_have_text(upstream.url)
    assert_fits_the_width(page)
    keep_screenshot(page, "tester")
