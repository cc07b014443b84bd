"""An admin logs in, adds a service and a route through the admin's forms, and the running
gateway serves the route from that service's target."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from accounts.models import User
from tests.browser.conftest import assert_fits_the_width, eventually, log_in, served_by
from tests.servers import ServerThread

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_serves_a_route_added_in_the_admin(
    page: Page, admin: User, upstream: ServerThread, client: httpx.Client
) -> None:
    log_in(page, admin)

    page.locator("tr.model-service").get_by_role("link", name="Add").click()
    page.get_by_label("Name").fill("browser")
    page.locator("#id_targets-0-url").fill(upstream.url)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    expect(page.locator("#result_list")).to_contain_text("browser")
    assert_fits_the_width(page)

    page.get_by_role("link", name="Home").click()
    page.locator("tr.model-route").get_by_role("link", name="Add").click()
    page.get_by_label("Name").fill("browser")
    page.locator(".field-service .select2-selection").click()
    page.locator(".select2-search__field").fill("brow")
    page.get_by_role("option", name="browser").click()
    page.get_by_label("Path").fill("/browser/")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    expect(page.locator("#result_list")).to_contain_text("prefix /browser/")
    assert_fits_the_width(page)

    assert eventually(lambda: served_by(client, "/browser/x") == "up-a")
