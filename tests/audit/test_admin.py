"""The audit trail in the admin: auditors list, filter, search and export it; nobody, superusers
included, can add, change or delete a row."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group, Permission
from django.test import AsyncClient, Client

from accounts.models import User
from audit.models import AuditEntry
from tests.audit.conftest import make_entry, save_entries

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/audit/auditentry/"
EXPORT = "/admin/audit/auditentry/export/"


def shown(response: Any) -> set[str]:
    """The request ids on the changelist page."""
    assert response.status_code == 200
    return {entry.request_id for entry in response.context["cl"].result_list}


def exported(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_migration_gives_the_auditor_group_only_view_permissions():
    codenames = set(
        Group.objects.get(name="Auditor").permissions.values_list("codename", flat=True)
    )

    assert codenames == {
        "view_auditentry",
        "view_historicalservice",
        "view_historicaltarget",
        "view_historicalroute",
        "view_historicalrolepolicy",
        "view_historicalratelimittier",
        "view_historicalroutetieroverride",
        "view_historicalapikey",
        "view_historicalgatewaydefaults",
    }


def test_an_auditor_sees_the_audit_section_and_lists_entries(auditor_client):
    save_entries(make_entry(request_id="a-1"), make_entry(request_id="a-2", path="/admin-api/x"))

    index = auditor_client.get("/admin/").content.decode()
    response = auditor_client.get(CHANGELIST)

    assert "Audit entries" in index
    assert "Route changes" in index
    assert "API key changes" in index
    assert shown(response) == {"a-1", "a-2"}
    html = response.content.decode()
    assert "/admin-api/x" in html
    assert "12.5 ms" in html


def test_an_auditor_filters_by_outcome_status_class_route_and_auth_method(auditor_client):
    save_entries(
        make_entry(request_id="ok", status=200),
        make_entry(request_id="moved", status=302),
        make_entry(request_id="denied", outcome="denied", reason="forbidden", status=403),
        make_entry(
            request_id="anonymous",
            outcome="denied",
            reason="missing_credentials",
            status=401,
            auth_method="",
            caller_id="",
            route="other",
        ),
        make_entry(request_id="broken", status=502),
        make_entry(request_id="unanswered", status=None),
    )

    assert shown(auditor_client.get(CHANGELIST, {"outcome__exact": "denied"})) == {
        "denied",
        "anonymous",
    }
    assert shown(auditor_client.get(CHANGELIST, {"status_class": "4xx"})) == {"denied", "anonymous"}
    assert shown(auditor_client.get(CHANGELIST, {"status_class": "5xx"})) == {"broken"}
    assert shown(auditor_client.get(CHANGELIST, {"status_class": "3xx"})) == {"moved"}
    assert shown(auditor_client.get(CHANGELIST, {"status_class": "none"})) == {"unanswered"}
    assert shown(auditor_client.get(CHANGELIST, {"route": "other"})) == {"anonymous"}
    assert shown(auditor_client.get(CHANGELIST, {"auth_method": "none"})) == {"anonymous"}
    assert shown(
        auditor_client.get(CHANGELIST, {"outcome__exact": "allowed", "status_class": "2xx"})
    ) == {"ok"}


def test_the_route_filter_lists_the_routes_seen_in_the_trail(auditor_client):
    save_entries(make_entry(route="billing"), make_entry(route="admin-api"), make_entry(route=""))

    response = auditor_client.get(CHANGELIST)

    route_filter = next(f for f in response.context["cl"].filter_specs if f.title == "route")
    assert [choice[0] for choice in route_filter.lookup_choices] == ["admin-api", "billing"]


def test_an_auditor_searches_by_request_id_path_and_ip(auditor_client):
    save_entries(
        make_entry(request_id="5f3c9a", path="/admin-api/users", client_ip="10.0.0.1"),
        make_entry(request_id="5f3c9abc", path="/admin-api/orders", client_ip="10.0.0.10"),
        make_entry(request_id="77aa", path="/admin-api/roles", client_ip="192.168.1.20"),
        make_entry(request_id="v6", path="/admin-api/keys", client_ip="2001:db8::1"),
        make_entry(request_id="no-ip", path="/admin-api/keys", client_ip=None),
    )

    def search(term: str) -> set[str]:
        return shown(auditor_client.get(CHANGELIST, {"q": term}))

    assert search("5f3c9a") == {"5f3c9a"}  # a request id matches whole
    assert search("/admin-api/orders") == {"5f3c9abc"}
    assert search("roles") == {"77aa"}  # a path matches in part
    assert search("10.0.0.1") == {"5f3c9a"}  # an address matches whole
    assert search("10.0.0.") == {"5f3c9a", "5f3c9abc"}  # or by its start
    assert search("192.168.") == {"77aa"}
    assert search("2001:DB8::1") == {"v6"}
    assert search("keys 2001:db8:") == {"v6"}  # every word must match
    assert search("nothing-like-this") == set()


def test_the_changelist_links_to_an_export_of_what_it_shows(auditor_client):
    response = auditor_client.get(CHANGELIST, {"outcome__exact": "denied", "q": "users"})

    html = response.content.decode()
    assert 'href="/admin/audit/auditentry/export/?outcome__exact=denied&amp;q=users"' in html
    assert "Export CSV" in html


def test_the_export_holds_exactly_the_filtered_rows_beyond_the_first_page(auditor_client):
    # More denied rows than a changelist page (100), and rows the filter must leave out.
    denied = [
        make_entry(request_id=f"d-{i:03d}", outcome="denied", reason="forbidden", status=403)
        for i in range(130)
    ]
    save_entries(
        *denied,
        make_entry(request_id="allowed-1"),
        make_entry(request_id="d-other-path", outcome="denied", status=403, path="/admin-api/x"),
    )

    response = auditor_client.get(EXPORT, {"outcome__exact": "denied", "q": "users"})

    rows = exported(response)
    assert len(rows) == 130
    assert {row["request_id"] for row in rows} == {f"d-{i:03d}" for i in range(130)}
    first = rows[0]
    assert list(first) == [f.attname for f in AuditEntry._meta.concrete_fields]
    assert first["outcome"] == "denied"
    assert first["status"] == "403"
    assert first["client_ip"] == "10.0.0.1"


def test_the_export_follows_the_status_class_filter_and_date_drilldown(auditor_client):
    save_entries(make_entry(request_id="ok"), make_entry(request_id="bad", status=503))
    entry = AuditEntry.objects.get(request_id="bad")

    by_status = exported(auditor_client.get(EXPORT, {"status_class": "5xx"}))
    by_day = exported(
        auditor_client.get(
            EXPORT,
            {
                "created_at__year": entry.created_at.year,
                "created_at__month": entry.created_at.month,
                "created_at__day": entry.created_at.day,
                "status_class": "5xx",
            },
        )
    )

    assert [row["request_id"] for row in by_status] == ["bad"]
    assert [row["request_id"] for row in by_day] == ["bad"]


def test_an_export_with_a_bad_filter_goes_back_to_the_changelist(auditor_client):
    response = auditor_client.get(EXPORT, {"status": "not-a-number"})

    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}?e=1"


def test_an_empty_export_is_a_header_line_only(auditor_client):
    response = auditor_client.get(EXPORT, {"q": "nothing-matches"})

    body = b"".join(response.streaming_content).decode()
    assert body.splitlines() == [",".join(f.attname for f in AuditEntry._meta.concrete_fields)]


def test_the_export_defuses_spreadsheet_formulas(auditor_client):
    save_entries(make_entry(user_agent='=HYPERLINK("http://evil")', caller_email="@x"))

    row = exported(auditor_client.get(EXPORT))[0]

    assert row["user_agent"] == '\'=HYPERLINK("http://evil")'
    assert row["caller_email"] == "'@x"


def test_the_export_streams_under_asgi(auditor):
    save_entries(*(make_entry(request_id=f"asgi-{i:04d}") for i in range(2500)))

    async def fetch() -> tuple[Any, list[bytes]]:
        client = AsyncClient()
        await client.aforce_login(auditor)
        response = await client.get(EXPORT)
        return response, [chunk async for chunk in response.streaming_content]

    response, chunks = async_to_sync(fetch)()

    assert response.status_code == 200
    assert len(chunks) > 2  # blocks of rows, not the whole file at once
    lines = b"".join(chunks).decode().splitlines()
    assert len(lines) == 2501


@pytest.mark.parametrize("user_kind", ["auditor", "superuser"])
def test_nobody_adds_changes_or_deletes_audit_entries(user_kind, auditor_client, alice_client):
    client = auditor_client if user_kind == "auditor" else alice_client
    save_entries(make_entry(request_id="keep-me"))
    entry = AuditEntry.objects.get(request_id="keep-me")
    change = f"{CHANGELIST}{entry.pk}/change/"
    delete = f"{CHANGELIST}{entry.pk}/delete/"

    assert client.get(f"{CHANGELIST}add/").status_code == 403
    assert client.post(f"{CHANGELIST}add/", {"request_id": "forged"}).status_code == 403
    assert client.post(change, {"outcome": "allowed", "path": "/forged"}).status_code == 403
    assert client.get(delete).status_code == 403
    assert client.post(delete, {"post": "yes"}).status_code == 403

    page = client.get(change)  # the detail page is there, read-only
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert AuditEntry.objects.get(pk=entry.pk).path == "/admin-api/users"
    assert not AuditEntry.objects.filter(request_id="forged").exists()


def test_a_superuser_gets_no_delete_action(alice_client):
    save_entries(make_entry(request_id="keep-me"))
    entry = AuditEntry.objects.get()

    page = alice_client.get(CHANGELIST)
    posted = alice_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"}
    )

    assert page.context["action_form"] is None
    assert "delete_selected" not in page.content.decode()
    assert posted.status_code in {200, 302}
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_staff_outside_the_auditor_group_see_nothing():
    user = User.objects.create_user("bob", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_route"))
    client = Client()
    client.force_login(user)
    save_entries(make_entry())

    assert client.get(CHANGELIST).status_code == 403
    assert client.get(EXPORT).status_code == 403
    assert client.get("/admin/audit/historicalroute/").status_code == 403


def test_the_export_needs_a_staff_login():
    response = Client().get(EXPORT)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_trail_shows_seconds_usernames_and_milliseconds(auditor_client, alice):
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    save_entries(
        make_entry(
            request_id="by-alice",
            created_at=when,
            caller_id=str(alice.pk),
            caller_email=alice.email,
            latency_ms=8.4,
        ),
        make_entry(
            request_id="by-key",
            caller_id=str(alice.pk),
            caller_email=alice.email,
            auth_method="api_key",
            key_prefix="pk_abc",
        ),
        # A token from another auth service: its id is a local user's, its email is not.
        make_entry(request_id="foreign", caller_id=str(alice.pk), caller_email="x@elsewhere"),
    )

    html = auditor_client.get(CHANGELIST).content.decode()

    assert re.search(r'class="field-time"><a href="[^"]+">2026-03-04 05:06:07</a>', html)
    assert '<td class="field-caller">alice</td>' in html
    assert '<td class="field-caller">alice (key pk_abc)</td>' in html
    assert '<td class="field-caller">x@elsewhere</td>' in html
    assert '<td class="field-latency">8.4 ms</td>' in html
    assert '<td class="field-request_display">GET /admin-api/users</td>' in html
