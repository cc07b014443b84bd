"""A configuration an admin makes in the admin's own forms survives the declarative document:
export, import into an empty database, export again gives the same bytes, and the imported
configuration is served the same way."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from routing.api.document import document_apply, document_dump, document_export, document_load
from routing.models import RateLimitTier, RolePolicy, Route, Service
from tests.routing.test_admin import route_form, service_form

pytestmark = pytest.mark.django_db


def admin_makes_a_configuration(admin_client) -> None:
    doctor = Group.objects.create(name="doctor")
    service = service_form(Service(name="records", retries=2, retry_statuses="502, 503"))
    service |= {
        "targets-TOTAL_FORMS": 2,
        "targets-0-url": "http://10.0.0.5:8080",
        "targets-0-weight": 100,
        "targets-0-enabled": "on",
        "targets-1-url": "http://10.0.0.6:8080/base",
        "targets-1-weight": 25,
    }
    assert admin_client.post("/admin/routing/service/add/", service).status_code == 302
    policy = {"name": "doctors-only", "kind": "any_of", "roles": [doctor.pk], "description": ""}
    assert admin_client.post("/admin/routing/rolepolicy/add/", policy).status_code == 302
    tier = {"name": "general", "rate": "100/15m", "key": "user", "header_name": ""}
    assert admin_client.post("/admin/routing/ratelimittier/add/", tier).status_code == 302
    routes = [
        route_form(
            name="records",
            service=Service.objects.get(name="records").pk,
            path="/api/v1/records",
            methods="GET, POST",
            strip_prefix="on",
            role_policy=RolePolicy.objects.get().pk,
            rate_limit_tier=RateLimitTier.objects.get().pk,
        ),
        route_form(
            name="record-by-id",
            service=Service.objects.get(name="records").pk,
            path=r"^/api/v1/records/(?P<id>\d+)$",
            match_type="regex",
            rewrite=r"/records/\g<id>",
            priority=10,
        ),
    ]
    for route in routes:
        response = admin_client.post("/admin/routing/route/add/", route)
        assert response.status_code == 302, response.content.decode()[:2000]


def test_a_configuration_made_in_the_admin_round_trips(admin_client):
    admin_makes_a_configuration(admin_client)
    exported = document_dump(document_export())

    Route.objects.all().delete()
    Service.objects.all().delete()
    RolePolicy.objects.all().delete()
    RateLimitTier.objects.all().delete()
    document_apply(document_load(exported))

    assert document_dump(document_export()) == exported
    assert sorted(Route.objects.values_list("name", flat=True)) == ["record-by-id", "records"]
    assert list(RolePolicy.objects.get().roles.values_list("name", flat=True)) == ["doctor"]
    assert document_apply(document_load(exported)).is_empty()
