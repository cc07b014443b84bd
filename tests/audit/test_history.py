"""Configuration history: every change to the gateway's configuration is kept with its editor and
shown to auditors, read-only, as a field-by-field diff. API key hashes never enter it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group

from accounts.models import ApiKey, User
from routing.models import ConfigVersion, RolePolicy, Route, Service
from tests.conftest import make_route, make_service
from tests.routing.test_admin import route_form, route_form_of, service_form

pytestmark = pytest.mark.django_db

ROUTE_CHANGES = "/admin/audit/historicalroute/"


def page(client: Any, url: str, **params: Any) -> str:
    response = client.get(url, params)
    assert response.status_code == 200
    return response.content.decode()


def test_a_route_edited_in_the_admin_shows_its_diff_and_editor_to_an_auditor(
    alice_client, auditor_client
):
    users = make_service("users", "http://10.0.0.5:8080")
    people = make_service("people", "http://10.0.0.6:8080")
    response = alice_client.post(
        "/admin/routing/route/add/", route_form(name="users", service=users.pk, path="/users")
    )
    assert response.status_code == 302
    route = Route.objects.get(name="users")

    response = alice_client.post(
        f"/admin/routing/route/{route.pk}/change/",
        route_form_of(route, path="/people", priority=5, service=people.pk),
    )

    assert response.status_code == 302
    html = page(auditor_client, ROUTE_CHANGES)
    assert "<b>path</b>: /users → /people" in html
    assert "<b>priority</b>: 0 → 5" in html
    assert "<b>service</b>: users → people" in html  # related objects by name
    assert "<b>name</b>: users" in html  # the creation, with its fields
    assert [r.history_user.username for r in Route.history.all()] == ["alice", "alice"]
    assert html.count('<td class="field-editor">alice</td>') == 2


def test_the_history_is_filtered_by_editor_object_and_date(alice_client, auditor_client, alice):
    service = make_service("users", "http://10.0.0.5:8080")
    scripted = make_route(service, "/scripted", name="scripted")  # no request: no editor
    alice_client.post(
        "/admin/routing/route/add/", route_form(name="manual", service=service.pk, path="/manual")
    )
    manual = Route.objects.get(name="manual")
    record = manual.history.get()

    def listed(**params: Any) -> set[str]:
        response = auditor_client.get(ROUTE_CHANGES, params)
        assert response.status_code == 200
        return {r.name for r in response.context["cl"].result_list}

    assert listed() == {"scripted", "manual"}
    assert listed(history_user__id__exact=alice.pk) == {"manual"}
    assert listed(history_user__isnull="True") == {"scripted"}
    assert listed(id=scripted.pk) == {"scripted"}  # the object column links here
    assert listed(history_type__exact="+") == {"scripted", "manual"}
    assert listed(
        history_date__year=record.history_date.year,
        history_date__month=record.history_date.month,
        history_date__day=record.history_date.day,
    ) == {"scripted", "manual"}
    assert listed(history_date__year=record.history_date.year - 1) == set()
    assert listed(q="alice") == {"manual"}


def test_a_target_changed_on_the_service_page_is_in_the_target_history(
    alice_client, auditor_client
):
    service = make_service("moving", "http://10.0.0.5:8080")

    response = alice_client.post(
        f"/admin/routing/service/{service.pk}/change/",
        service_form(service, read_timeout=10, **{"targets-0-url": "http://10.0.0.6:8080"}),
    )

    assert response.status_code == 302
    targets = page(auditor_client, "/admin/audit/historicaltarget/")
    services = page(auditor_client, "/admin/audit/historicalservice/")
    assert "<b>url</b>: http://10.0.0.5:8080 → http://10.0.0.6:8080" in targets
    assert "<b>read_timeout</b>: 30.0 → 10.0" in services
    assert "updated_at" not in services  # bookkeeping is not a change
    assert "alice" in targets
    assert "alice" in services


def test_role_policy_roles_are_diffed_by_name(alice_client, auditor_client):
    readers = Group.objects.create(name="readers")
    writers = Group.objects.create(name="writers")
    form = {"name": "staff", "kind": "any_of", "description": ""}
    alice_client.post("/admin/routing/rolepolicy/add/", form | {"roles": [readers.pk]})
    policy = RolePolicy.objects.get()

    alice_client.post(
        f"/admin/routing/rolepolicy/{policy.pk}/change/", form | {"roles": [writers.pk]}
    )

    html = page(auditor_client, "/admin/audit/historicalrolepolicy/")
    assert "<b>roles</b>: none → readers" in html
    assert "→ writers" in html
    assert set(policy.history.values_list("history_user__username", flat=True)) == {"alice"}


def test_a_deleted_route_stays_in_the_history(alice_client, auditor_client):
    route = make_route(make_service("old", "http://10.0.0.5:8080"), "/old", name="old")

    response = alice_client.post(f"/admin/routing/route/{route.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Route.objects.exists()
    latest = Route.history.model.objects.latest()
    assert (latest.history_type, latest.history_user.username) == ("-", "alice")
    assert "deleted" in page(auditor_client, ROUTE_CHANGES)


def test_api_key_history_names_the_editor_and_never_holds_the_hash(alice_client, auditor_client):
    owner = User.objects.create_user("billing-sync", email="billing@example.com")
    alice_client.post("/admin/accounts/apikey/add/", {"owner": owner.pk, "name": "sync"})
    api_key = ApiKey.objects.get(name="sync")

    alice_client.post(
        "/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]}
    )

    history_model = ApiKey.history.model
    assert "hashed_key" not in {field.name for field in history_model._meta.get_fields()}
    records = list(api_key.history.all())
    assert [(r.history_type, r.history_user.username) for r in records] == [
        ("~", "alice"),
        ("+", "alice"),
    ]
    listing = page(auditor_client, "/admin/audit/historicalapikey/")
    details = [
        page(auditor_client, f"/admin/audit/historicalapikey/{r.history_id}/change/")
        for r in records
    ]
    assert "<b>revoked_at</b>: empty → " in listing
    assert f"<b>prefix</b>: {api_key.prefix}" in listing
    for html in (listing, *details):
        assert api_key.hashed_key not in html
        assert "hashed_key" not in html
        assert "hashed key" not in html.lower()


def test_an_auditor_reads_a_change_but_cannot_alter_or_delete_it(alice_client, auditor_client):
    service = make_service("users", "http://10.0.0.5:8080")
    alice_client.post(
        f"/admin/routing/service/{service.pk}/change/", service_form(service, retries=3)
    )
    record = Service.history.latest()
    url = f"/admin/audit/historicalservice/{record.history_id}/"

    detail = page(auditor_client, f"{url}change/")

    assert "<b>retries</b>: 1 → 3" in detail
    assert 'name="_save"' not in detail
    assert auditor_client.post(f"{url}change/", {"retries": 0}).status_code == 403
    assert auditor_client.post(f"{url}delete/", {"post": "yes"}).status_code == 403
    assert alice_client.post(f"{url}delete/", {"post": "yes"}).status_code == 403
    assert alice_client.get("/admin/audit/historicalservice/add/").status_code == 403
    assert Service.history.filter(history_id=record.history_id).exists()


def test_the_changelist_diffs_a_page_in_a_fixed_number_of_queries(
    alice_client, auditor_client, django_assert_max_num_queries
):
    route = make_route(make_service("busy", "http://10.0.0.5:8080"), "/busy", name="busy")
    for priority in range(1, 21):
        alice_client.post(
            f"/admin/routing/route/{route.pk}/change/", route_form_of(route, priority=priority)
        )

    with django_assert_max_num_queries(12):
        html = page(auditor_client, ROUTE_CHANGES)

    assert "<b>priority</b>: 19 → 20" in html


@pytest.mark.django_db(transaction=True)
def test_history_rows_do_not_publish_the_configuration():
    route = make_route(make_service("quiet", "http://127.0.0.1:9"), "/quiet")
    before = ConfigVersion.objects.get(pk=1).number

    copy = route.history.latest()
    copy.history_id = None
    copy.save()
    after_history = ConfigVersion.objects.get(pk=1).number
    route.priority = 3
    route.save()

    assert after_history == before
    assert ConfigVersion.objects.get(pk=1).number == before + 1
