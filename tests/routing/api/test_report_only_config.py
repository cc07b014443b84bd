"""Report-only mode in the three views of the configuration (the admin, the management API, the
declarative document) and in the route tester: each sets and shows it, the API's change is in
the history and served by the live gateway, and documents without it export as before."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.contrib.auth.models import Group

from routing.api.document import (
    DocumentInvalid,
    document_apply,
    document_dump,
    document_export,
    document_load,
)
from routing.api.tester_findings import REPORT_ONLY
from routing.models import RateLimitTier, RolePolicy
from tests.conftest import make_route, make_service, publish, received
from tests.routing.api import test_management_api as management
from tests.routing.api.test_document import SEED_DOCUMENT, empty_database
from tests.routing.api.test_tester import ask

admin = management.admin  # fixtures: a superuser's and an auditor's bearer headers
auditor = management.auditor

DOCUMENT = """\
version: 1
services:
  - name: users
    targets:
      - url: http://127.0.0.1:9
policies:
  - name: doctors-only
    kind: any_of
    roles: [doctor]
    report_only: true
  - name: signed-in
    kind: authenticated
tiers:
  - name: general
    rate: 100/15m
    report_only: true
  - name: strict
    rate: 5/m
routes:
  - name: users
    service: users
    path: /api/v1/users
    policy: doctors-only
    tier: general
"""


def modes(page: str) -> dict[str, str]:
    """The changelist's mode column, by the object's name."""
    rows = re.findall(r'<th class="field-name">.*?>([^<]+)</a>.*?class="field-mode">([^<]*)<', page)
    return dict(rows)


# --- Admin ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_sets_report_only_on_a_policy_and_lists_the_mode(admin_client):
    doctor = Group.objects.create(name="doctor")
    RolePolicy.objects.create(name="signed-in", kind=RolePolicy.Kind.AUTHENTICATED)

    form = admin_client.get("/admin/routing/rolepolicy/add/").content.decode()
    assert 'name="report_only"' in form
    response = admin_client.post(
        "/admin/routing/rolepolicy/add/",
        {"name": "doctors-only", "kind": "any_of", "roles": [doctor.pk], "report_only": "on"},
    )

    assert response.status_code == 302
    assert RolePolicy.objects.get(name="doctors-only").report_only is True
    page = html.unescape(admin_client.get("/admin/routing/rolepolicy/").content.decode())
    assert modes(page) == {"doctors-only": "report-only", "signed-in": "enforced"}
    only = admin_client.get("/admin/routing/rolepolicy/", {"report_only__exact": "1"})
    assert modes(html.unescape(only.content.decode())) == {"doctors-only": "report-only"}


@pytest.mark.django_db
def test_the_admin_sets_report_only_on_a_tier_and_lists_the_mode(admin_client):
    strict = RateLimitTier.objects.create(name="strict", rate="5/m")

    response = admin_client.post(
        f"/admin/routing/ratelimittier/{strict.pk}/change/",
        {"name": "strict", "rate": "5/m", "key": "user", "report_only": "on"},
    )
    RateLimitTier.objects.create(name="general", rate="100/m")

    assert response.status_code == 302
    assert RateLimitTier.objects.get(name="strict").report_only is True
    page = html.unescape(admin_client.get("/admin/routing/ratelimittier/").content.decode())
    assert modes(page) == {"general": "enforced", "strict": "report-only"}


# --- Management API ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_patching_a_tier_to_report_only_is_served_and_in_the_history(
    client, admin, auditor, upstream
):
    tier = {"name": "one-an-hour", "rate": "1/h", "key": "ip"}
    assert client.post("/admin/api/tiers/", json=tier, headers=admin).status_code == 201
    assert client.get("/admin/api/tiers/one-an-hour", headers=admin).json()["report_only"] is False
    make_service("svc", upstream.url)
    route = {"name": "api-route", "service": "svc", "path": "/limited", "tier": "one-an-hour"}
    assert client.post("/admin/api/routes/", json=route, headers=admin).status_code == 201
    assert management.eventually(lambda: client.get("/limited").status_code == 429)

    response = client.patch(
        "/admin/api/tiers/one-an-hour", json={"report_only": True}, headers=admin
    )

    assert response.status_code == 200, response.text
    assert response.json()["report_only"] is True
    assert management.eventually(lambda: client.get("/limited").status_code == 200)
    served = client.get("/limited")
    assert served.status_code == 200 and "ratelimit-limit" not in served.headers
    history = client.get("/admin/api/history/tiers?object=one-an-hour", headers=auditor).json()
    changed = history["results"][0]
    assert (changed["user"], changed["action"], changed["changed"]) == (
        "root",
        "changed",
        ["report_only"],
    )
    assert (changed["before"], changed["after"]) == (
        {"report_only": False},
        {"report_only": True},
    )


@pytest.mark.django_db(transaction=True)
def test_patching_a_policy_to_report_only_lets_callers_through(client, admin, auditor, upstream):
    Group.objects.create(name="doctor")
    policy = {"name": "doctors", "kind": "any_of", "roles": ["doctor"]}
    assert client.post("/admin/api/policies/", json=policy, headers=admin).status_code == 201
    make_service("svc", upstream.url)
    route = {"name": "records", "service": "svc", "path": "/records", "policy": "doctors"}
    assert client.post("/admin/api/routes/", json=route, headers=admin).status_code == 201
    assert management.eventually(lambda: client.get("/records").status_code == 401)

    response = client.patch(
        "/admin/api/policies/doctors", json={"report_only": True}, headers=admin
    )

    assert response.status_code == 200, response.text
    assert response.json()["report_only"] is True
    assert management.eventually(lambda: client.get("/records").status_code == 200)
    assert received(upstream)[-1]["path"] == "/records"
    history = client.get("/admin/api/history/policies?object=doctors", headers=auditor).json()
    assert history["results"][0]["changed"] == ["report_only"]
    bad = client.patch("/admin/api/policies/doctors", json={"report_only": "maybe"}, headers=admin)
    assert bad.status_code == 400


# --- The declarative document --------------------------------------------------------------


@pytest.mark.django_db
def test_a_document_with_report_only_round_trips_byte_for_byte():
    Group.objects.create(name="doctor")
    document_apply(document_load(DOCUMENT))

    exported = document_dump(document_export())

    assert RolePolicy.objects.get(name="doctors-only").report_only is True
    assert RateLimitTier.objects.get(name="general").report_only is True
    assert RolePolicy.objects.get(name="signed-in").report_only is False
    policies = {p["name"]: p for p in document_export()["policies"]}
    assert policies["doctors-only"]["report_only"] is True
    assert "report_only" not in policies["signed-in"]  # false is the default: left out
    empty_database()
    document_apply(document_load(exported))
    assert document_dump(document_export()) == exported


@pytest.mark.django_db
def test_a_document_without_report_only_exports_unchanged():
    empty_database()
    document_apply(document_load(SEED_DOCUMENT.read_text()))
    before = document_dump(document_export())
    spelled_out = document_load(before)
    for item in spelled_out["policies"] + spelled_out["tiers"]:
        item["report_only"] = False

    changes = document_apply(spelled_out)

    assert changes.is_empty()
    after = document_dump(document_export())
    assert after == before
    assert "report_only" not in after


@pytest.mark.django_db
def test_switching_report_only_in_a_document_is_a_one_field_change():
    Group.objects.create(name="doctor")
    document_apply(document_load(DOCUMENT))
    document = document_export()
    del document["tiers"][0]["report_only"]  # general: enforced again

    changes = document_apply(document, dry_run=True)

    assert changes.changed == [("tiers/general", "report_only", True, False)]
    bad = document_export()
    bad["policies"][0]["report_only"] = "yes"
    with pytest.raises(DocumentInvalid) as refused:
        document_apply(bad)
    assert any(e.startswith("policies[0].report_only:") for e in refused.value.errors)


# --- The route tester ----------------------------------------------------------------------


def report_only_route(upstream: Any) -> None:
    doctors = RolePolicy.objects.create(name="doctors", kind="any_of", report_only=True)
    doctors.roles.set([Group.objects.get_or_create(name="doctor")[0]])
    tier = RateLimitTier.objects.create(name="two", rate="2/h", key="ip", report_only=True)
    make_route(make_service("svc", upstream.url), "/ro", role_policy=doctors, rate_limit_tier=tier)
    publish()


@pytest.mark.django_db(transaction=True)
def test_the_tester_says_a_report_only_policy_and_tier_would_deny_but_do_not(
    client, admin, upstream
):
    report_only_route(upstream)
    fresh = ask(client, admin, path="/ro")
    assert fresh["policy"]["decision"] == REPORT_ONLY
    assert (fresh["policy"]["status"], fresh["policy"]["code"]) == (401, "missing_credentials")
    assert fresh["policy"]["report_only"] is True
    assert fresh["tier"]["decision"] == "allowed" and fresh["tier"]["report_only"] is True

    assert [client.get("/ro").status_code for _ in range(2)] == [200, 200]
    spent = ask(client, admin, path="/ro")

    assert spent["tier"]["count"] == 2
    assert spent["tier"]["decision"] == REPORT_ONLY
    assert spent["outcome"] == {"stage": "forward", "status": None}


@pytest.mark.django_db(transaction=True)
def test_the_admin_tester_page_shows_the_report_only_policy_decision(admin_client, upstream):
    report_only_route(upstream)

    answer = admin_client.post(
        "/admin/routing/tester/",
        {"method": "GET", "host": "api.example.com", "path": "/ro", "headers": "", "token": ""},
    )

    assert answer.status_code == 200
    page = html.unescape(answer.content.decode())
    assert "would deny, report-only: not enforced" in page
    assert received(upstream) == []
