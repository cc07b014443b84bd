"""An auditor logs in and finds the audit trail, and nothing of the gateway's configuration or
traffic: no routes, services, tester or timeline on the index, 403 on a route's page."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from accounts.models import User
from tests.audit.conftest import make_entry, save_entries
from tests.browser.conftest import assert_fits_the_width, log_in
from tests.conftest import make_route, make_service, publish

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_auditor_reads_the_audit_trail_and_nothing_else(page: Page, auditor: User) -> None:
    route = make_route(make_service("users", "http://127.0.0.1:9"), "/users", name="users")
    publish()
    save_entries(make_entry(path="/admin-api/users/7", route="admin-api"))
    log_in(page, auditor)

    content = page.locator("#content-main")
    expect(content.get_by_role("link", name="Audit entries")).to_be_visible()
    for hidden in ("Routes", "Services", "Route tester", "Configuration timeline"):
        expect(content.get_by_role("link", name=hidden, exact=True)).to_have_count(0)
    expect(page.locator("#dashboard")).to_have_count(0)

    refused = page.goto(f"/admin/routing/route/{route.pk}/change/")
    assert refused is not None and refused.status == 403

    page.go_back()
    page.get_by_role("link", name="Audit entries").click()
    expect(page.locator("#result_list")).to_contain_text("/admin-api/users/7")
    expect(page.locator("#result_list")).to_contain_text("admin-api")
    assert_fits_the_width(page)
