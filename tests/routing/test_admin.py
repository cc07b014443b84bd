"""The Django admin as the control plane: its pages work, it refuses bad configuration, and what
it saves is served by the running gateway within about a second."""

from __future__ import annotations

import html
import io
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from routing.admin import TARGET_COLUMNS
from routing.models import ConfigVersion, RateLimitTier, RolePolicy, Route, Service
from routing.upstream import registry
from tests.conftest import make_route, make_service, publish

ADMIN_PAGES = [
    ("routing", "service"),
    ("routing", "target"),
    ("routing", "route"),
    ("routing", "rolepolicy"),
    ("routing", "ratelimittier"),
    ("accounts", "user"),
]


def service_form(service: Service, **overrides: Any) -> dict[str, Any]:
    """The Service change form as the browser posts it, with its inline targets' formset."""
    targets = list(service.targets.all()) if service.pk else []
    data: dict[str, Any] = {
        field: getattr(service, field)
        for field in (
            "name",
            "description",
            "balancing",
            "hash_on",
            "hash_header",
            "health_path",
            "health_interval",
            "health_timeout",
            "healthy_threshold",
            "unhealthy_threshold",
            "breaker_failures",
            "breaker_statuses",
            "breaker_cooldown",
            "connect_timeout",
            "read_timeout",
            "write_timeout",
            "total_timeout",
            "retries",
            "retry_statuses",
            "max_in_flight",
        )
    }
    data |= {
        "targets-TOTAL_FORMS": len(targets),
        "targets-INITIAL_FORMS": len(targets),
        "targets-MIN_NUM_FORMS": 0,
        "targets-MAX_NUM_FORMS": 1000,
    }
    for box in ("enabled", "allow_registration"):
        if getattr(service, box):
            data[box] = "on"
    for i, target in enumerate(targets):
        data |= {
            f"targets-{i}-id": target.pk,
            f"targets-{i}-service": service.pk,
            f"targets-{i}-url": target.url,
            f"targets-{i}-weight": target.weight,
        }
        if target.enabled:
            data[f"targets-{i}-enabled"] = "on"
    return {**data, **overrides}


def route_form(**fields: Any) -> dict[str, Any]:
    """The Route add/change form as the browser posts it (an unchecked box is left out)."""
    data: dict[str, Any] = {
        "priority": 0,
        "match_type": "prefix",
        "methods": "",
        "hosts": "",
        "header_matches": "{}",
        "rewrite": "",
        "role_policy": "",
        "rate_limit_tier": "",
        "enabled": "on",
        "forward_authorization": "on",
        "websocket_idle_timeout": 300,
        "websocket_max_connections": 0,
        # The tier-overrides inline's management form, empty.
        "tier_overrides-TOTAL_FORMS": 0,
        "tier_overrides-INITIAL_FORMS": 0,
        "tier_overrides-MIN_NUM_FORMS": 0,
        "tier_overrides-MAX_NUM_FORMS": 1000,
        **fields,
    }
    return {key: value for key, value in data.items() if value is not False}


def route_form_of(route: Route, **overrides: Any) -> dict[str, Any]:
    fields = {
        "name": route.name,
        "service": route.service_id,
        "path": route.path,
        "match_type": route.match_type,
        "priority": route.priority,
        "enabled": route.enabled,
    }
    return route_form(**(fields | overrides))


def served_within(check: Callable[[], bool], seconds: float = 5.0) -> float:
    """Poll the running gateway until `check` holds; the seconds it took (inf if it never did)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    return float("inf")


def served_by(client: httpx.Client, path: str) -> str | None:
    response = client.get(path)
    return response.headers.get("x-upstream") if response.status_code == 200 else None


@pytest.mark.django_db
@pytest.mark.parametrize(("app", "model"), ADMIN_PAGES)
def test_it_serves_the_changelist_add_and_change_pages(admin_client, admin_user, app, model):
    service = make_service("users", "http://127.0.0.1:9001")
    make_route(service, "/users")
    policy = RolePolicy.objects.create(name="staff", kind=RolePolicy.Kind.AUTHENTICATED)
    RateLimitTier.objects.create(name="basic", rate="100/m")
    objects = {
        "service": service,
        "target": service.targets.get(),
        "route": Route.objects.get(),
        "rolepolicy": policy,
        "ratelimittier": RateLimitTier.objects.get(),
        "user": admin_user,
    }
    base = f"/admin/{app}/{model}/"

    assert admin_client.get(base).status_code == 200
    assert admin_client.get(f"{base}add/").status_code == 200
    assert admin_client.get(f"{base}{objects[model].pk}/change/").status_code == 200


@pytest.mark.django_db
def test_the_route_forms_service_search_pages_through_services_by_name(admin_client):
    """Counting a service's targets and routes (GROUP BY) drops the model's ordering: the
    search's pages then came in the database's order, and could repeat or skip a service."""
    names = [f"svc-{n:02d}" for n in range(25)]
    for name in names[::2] + names[1::2]:  # created out of order
        Service.objects.create(name=name)
    url = "/admin/autocomplete/?app_label=routing&model_name=route&field_name=service"

    first = admin_client.get(url).json()
    second = admin_client.get(url + "&page=2").json()

    assert [r["text"] for r in first["results"]] == names[:20]
    assert first["pagination"]["more"] is True
    assert [r["text"] for r in second["results"]] == names[20:]


@pytest.mark.django_db
def test_it_shows_the_targets_inline_on_the_service_page(admin_client):
    service = make_service("users", "http://10.0.0.5:8080", "http://10.0.0.6:8080")

    page = admin_client.get(f"/admin/routing/service/{service.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="targets-TOTAL_FORMS"' in html
    assert 'value="http://10.0.0.5:8080"' in html
    assert 'value="http://10.0.0.6:8080"' in html


@pytest.mark.django_db
def test_it_adds_a_service_with_its_targets_in_one_form(admin_client):
    service_data = service_form(Service(name="orders"))
    service_data |= {
        "targets-TOTAL_FORMS": 2,
        "targets-0-url": "http://10.0.0.5:8080",
        "targets-0-weight": 100,
        "targets-0-enabled": "on",
        "targets-1-url": "http://10.0.0.6:8080",
        "targets-1-weight": 50,
    }

    response = admin_client.post("/admin/routing/service/add/", service_data)

    assert response.status_code == 302
    targets = Service.objects.get(name="orders").targets.order_by("url")
    assert [(t.url, t.weight, t.enabled) for t in targets] == [
        ("http://10.0.0.5:8080", 100, True),
        ("http://10.0.0.6:8080", 50, False),
    ]


@pytest.mark.django_db
def test_it_refuses_an_invalid_route_from_the_add_form_and_creates_nothing(admin_client):
    service = make_service("users", "http://127.0.0.1:9001")

    response = admin_client.post(
        "/admin/routing/route/add/",
        route_form(name="broken", service=service.pk, path="/users/(", match_type="regex"),
    )

    assert response.status_code == 200
    assert "The regular expression does not compile" in response.content.decode()
    assert not Route.objects.exists()


@pytest.mark.django_db
def test_it_refuses_a_route_shadowing_the_admin_from_the_add_form(admin_client):
    service = make_service("users", "http://127.0.0.1:9001")

    response = admin_client.post(
        "/admin/routing/route/add/", route_form(name="sneaky", service=service.pk, path="/admin")
    )

    assert response.status_code == 200
    assert "This path is served by the gateway itself" in response.content.decode()
    assert not Route.objects.exists()


@pytest.mark.django_db
def test_it_refuses_an_any_of_role_policy_without_roles(admin_client):
    response = admin_client.post(
        "/admin/routing/rolepolicy/add/", {"name": "readers", "kind": "any_of", "description": ""}
    )

    assert response.status_code == 200
    assert "Choose at least one role for this kind of policy." in response.content.decode()
    assert not RolePolicy.objects.exists()


@pytest.mark.django_db
def test_it_accepts_an_any_of_role_policy_with_a_role(admin_client):
    group = Group.objects.create(name="readers")

    response = admin_client.post(
        "/admin/routing/rolepolicy/add/",
        {"name": "readers", "kind": "any_of", "roles": [group.pk], "description": ""},
    )

    assert response.status_code == 302
    assert list(RolePolicy.objects.get().roles.all()) == [group]


@pytest.mark.django_db(transaction=True)
def test_it_publishes_once_for_a_service_saved_with_its_targets(admin_client):
    service = make_service("orders", "http://10.0.0.5:8080")
    before = ConfigVersion.objects.get(pk=1).number
    data = service_form(service, read_timeout=10)
    data |= {"targets-TOTAL_FORMS": 3, "targets-1-url": "http://10.0.0.6:8080"}
    data |= {"targets-1-weight": 100, "targets-2-url": "http://10.0.0.7:8080"}
    data |= {"targets-2-weight": 100, "targets-2-enabled": "on"}

    response = admin_client.post(f"/admin/routing/service/{service.pk}/change/", data)

    assert response.status_code == 302
    assert service.targets.count() == 3
    assert ConfigVersion.objects.get(pk=1).number == before + 1


@pytest.mark.django_db(transaction=True)
def test_a_route_moved_to_another_service_in_the_admin_is_served_within_a_second(
    admin_client, client, upstream, upstream_b
):
    first = make_service("first", upstream.url)
    second = make_service("second", upstream_b.url)
    response = admin_client.post(
        "/admin/routing/route/add/", route_form(name="live", service=first.pk, path="/live")
    )
    assert response.status_code == 302
    assert served_within(lambda: served_by(client, "/live/x") == "up-a") < 2.0

    route = Route.objects.get(name="live")
    response = admin_client.post(
        f"/admin/routing/route/{route.pk}/change/", route_form_of(route, service=second.pk)
    )

    assert response.status_code == 302
    assert served_within(lambda: served_by(client, "/live/x") == "up-b") < 2.0


@pytest.mark.django_db(transaction=True)
def test_a_target_changed_on_the_service_page_is_served_within_a_second(
    admin_client, client, upstream, upstream_b
):
    service = make_service("moving", upstream.url)
    make_route(service, "/moving")
    assert served_within(lambda: served_by(client, "/moving") == "up-a") < 2.0

    response = admin_client.post(
        f"/admin/routing/service/{service.pk}/change/",
        service_form(service, **{"targets-0-url": upstream_b.url}),
    )

    assert response.status_code == 302
    assert served_within(lambda: served_by(client, "/moving") == "up-b") < 2.0


@pytest.mark.django_db(transaction=True)
def test_a_route_path_changed_in_the_admin_is_served_within_a_second(
    admin_client, client, upstream
):
    route = make_route(make_service("paths", upstream.url), "/old-path")
    assert served_within(lambda: served_by(client, "/old-path") == "up-a") < 2.0

    response = admin_client.post(
        f"/admin/routing/route/{route.pk}/change/", route_form_of(route, path="/new-path")
    )

    assert response.status_code == 302
    assert served_within(lambda: served_by(client, "/new-path") == "up-a") < 2.0
    assert client.get("/old-path").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_route_disabled_in_the_admin_answers_404_within_a_second(admin_client, client, upstream):
    route = make_route(make_service("soon-off", upstream.url), "/soon-off")
    assert served_within(lambda: served_by(client, "/soon-off") == "up-a") < 2.0

    response = admin_client.post(
        f"/admin/routing/route/{route.pk}/change/", route_form_of(route, enabled=False)
    )

    assert response.status_code == 302
    assert served_within(lambda: client.get("/soon-off").status_code == 404) < 2.0
    assert client.get("/soon-off").json()["error"]["code"] == "route_not_found"


def target_rows(page: str) -> dict[str, dict[str, str]]:
    """The service page's targets table: each row by URL, its cells by column title."""
    table = re.search(r'<table class="portier-targets">.*?</table>', page, re.S)
    assert table is not None, "the page has no targets table"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(0), re.S)[1:]  # after the header row
    by_url = {}
    for row in rows:
        cells = [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        by_url[cells[1]] = dict(zip(TARGET_COLUMNS, cells, strict=True))
    return by_url


@pytest.fixture
def registered_instance(dead_url) -> Iterator[registry.Instance]:
    """An instance of service `watched` that registered itself, at an address where nothing
    listens; its metadata holds markup that the page must escape."""
    instance, _ = registry.instance_register(
        service="watched",
        url=dead_url,
        instance_id="w-1",
        metadata={"zone": "eu-1", "note": "<script>alert(1)</script>"},
    )
    yield instance
    registry.instance_deregister(service="watched", instance_id="w-1")


@pytest.mark.django_db
def test_the_service_page_shows_static_targets_and_registered_instances_with_their_health(
    gateway, admin_client, upstream, registered_instance
):
    # The page reports this process's health board; the gateway's lifespan runs its monitor.
    service = make_service(
        "watched",
        upstream.url,
        allow_registration=True,
        health_path="/healthz",
        health_interval=0.3,
        health_timeout=0.2,
        healthy_threshold=1,
        unhealthy_threshold=1,
    )
    publish()
    page_url = f"/admin/routing/service/{service.pk}/change/"

    def both_checked() -> bool:
        rows = target_rows(admin_client.get(page_url).content.decode())
        return {r["state"] for r in rows.values()} == {"healthy", "unhealthy"}

    assert served_within(both_checked, seconds=10) < float("inf")
    page = admin_client.get(page_url).content.decode()
    rows = target_rows(page)
    static, instance = rows[upstream.url], rows[registered_instance.url]
    assert static | {"last check": "", "latency (ms)": ""} == {
        "source": "static",
        "URL": upstream.url,
        "instance id": "-",
        "weight": "100",
        "state": "healthy",
        "circuit": "closed",
        "last check": "",
        "latency (ms)": "",
        "error": "-",
        "in flight": "0",
        "metadata": "-",
    }
    assert static["last check"] != "-" and static["latency (ms)"] != "-"
    assert instance["source"] == "registered"
    assert instance["instance id"] == "w-1"
    assert instance["state"] == "unhealthy"
    assert instance["circuit"] == "closed"
    assert "ConnectError" in instance["error"]
    assert instance["metadata"] == '{"note": "<script>alert(1)</script>", "zone": "eu-1"}'
    assert "<script>" not in page
    assert "Degraded: 1 of 2 available." in page


@pytest.mark.django_db
def test_the_service_page_says_when_the_service_is_not_served_yet(admin_client):
    service = make_service("never-published", "http://10.0.0.5:8080")

    page = admin_client.get(f"/admin/routing/service/{service.pk}/change/").content.decode()

    assert "not in the configuration this process serves" in page
    assert 'value="http://10.0.0.5:8080"' in page  # the static targets are still editable


@pytest.mark.django_db
def test_the_service_list_shows_balancing_and_health_without_a_query_per_row(gateway, admin_client):
    make_service("listed-one", "http://10.0.0.5:8080", balancing="least_in_flight")
    publish()
    with CaptureQueriesContext(connection) as one_row:
        page = admin_client.get("/admin/routing/service/").content.decode()
    assert "Least in-flight requests" in page
    assert ">unknown</span>" in page  # no active checks: in rotation, not known healthy

    make_service("listed-two", "http://10.0.0.6:8080", "http://10.0.0.7:8080")
    make_service("listed-three", "http://10.0.0.8:8080")
    publish()
    make_service("listed-unserved", "http://10.0.0.9:8080")
    with CaptureQueriesContext(connection) as four_rows:
        page = admin_client.get("/admin/routing/service/").content.decode()

    assert page.count('<span class="portier-badge muted"') == 4
    assert "Not served: disabled, or saved a moment ago." in page
    assert len(four_rows) == len(one_row)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"health_path": "/healthz", "health_interval": 2, "health_timeout": 2},
            "A probe must time out before the next one is due.",
        ),
        ({"retry_statuses": "502, 404"}, "'404' is not a 5xx status"),
        (
            {"balancing": "consistent_hash", "hash_on": "header", "hash_header": ""},
            "Hashing on a header needs the header's name.",
        ),
    ],
    ids=["probe-timeout", "retry-status", "hash-header"],
)
def test_it_refuses_a_bad_upstream_configuration_with_the_reason(admin_client, fields, message):
    response = admin_client.post(
        "/admin/routing/service/add/", service_form(Service(name="fragile"), **fields)
    )

    assert response.status_code == 200
    assert message in html.unescape(response.content.decode())
    assert not Service.objects.exists()


@pytest.mark.django_db
def test_it_saves_the_upstream_configuration_from_the_service_page(admin_client):
    data = service_form(
        Service(name="tuned"),
        balancing="consistent_hash",
        hash_on="header",
        hash_header="X-Tenant",
        health_path="/healthz",
        health_interval=5,
        health_timeout=1,
        retry_statuses="504,502",
        allow_registration=True,
    )

    response = admin_client.post("/admin/routing/service/add/", data)

    assert response.status_code == 302
    service = Service.objects.get(name="tuned")
    assert (service.balancing, service.hash_on, service.hash_header) == (
        "consistent_hash",
        "header",
        "X-Tenant",
    )
    assert (service.health_path, service.health_interval, service.health_timeout) == (
        "/healthz",
        5,
        1,
    )
    assert service.retry_statuses == "502, 504"
    assert service.allow_registration is True


@pytest.mark.django_db
def test_the_route_form_lets_unsafe_methods_be_retried(admin_client):
    service = make_service("payments", "http://127.0.0.1:9001")

    page = admin_client.get("/admin/routing/route/add/").content.decode()
    response = admin_client.post(
        "/admin/routing/route/add/",
        route_form(name="pay", service=service.pk, path="/pay", retry_unsafe_methods="on"),
    )

    assert 'name="retry_unsafe_methods"' in page
    assert response.status_code == 302
    assert Route.objects.get(name="pay").retry_unsafe_methods is True


def page_text(response: Any) -> str:
    return html.unescape(response.content.decode())


@pytest.mark.django_db
def test_it_refuses_a_route_to_a_service_with_nothing_to_forward_to(admin_client):
    service = make_service("hollow", "http://10.0.0.5:8080")
    service.targets.update(enabled=False)

    response = admin_client.post(
        "/admin/routing/route/add/", route_form(name="dead-end", service=service.pk, path="/x")
    )

    assert response.status_code == 200
    assert (
        "Service “hollow” has no enabled target and does not allow registration: every request "
        "to this route would get 503." in page_text(response)
    )
    assert not Route.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("service_fields", "route_fields"),
    [
        ({"allow_registration": True}, {}),  # instances will register themselves
        ({}, {"enabled": False}),  # a draft: not served yet
        ({"enabled": False}, {}),  # the service is not served either
    ],
    ids=["registration", "route-disabled", "service-disabled"],
)
def test_it_accepts_a_route_to_a_service_without_targets_that_cannot_503(
    admin_client, service_fields, route_fields
):
    service = make_service("later", **service_fields)

    response = admin_client.post(
        "/admin/routing/route/add/",
        route_form(name="later", service=service.pk, path="/later", **route_fields),
    )

    assert response.status_code == 302
    assert Route.objects.filter(name="later").exists()


@pytest.mark.django_db
def test_it_refuses_enabling_from_the_route_list_a_route_with_nothing_to_forward_to(
    admin_client,
):
    route = make_route(make_service("hollow"), "/hollow", enabled=False)

    response = admin_client.post(
        "/admin/routing/route/",
        {
            "form-TOTAL_FORMS": 1,
            "form-INITIAL_FORMS": 1,
            "form-MIN_NUM_FORMS": 0,
            "form-MAX_NUM_FORMS": 1000,
            "form-0-id": route.pk,
            "form-0-enabled": "on",
            "_save": "Save",
        },
    )

    assert response.status_code == 200
    assert "Service “hollow” has no enabled target" in page_text(response)
    route.refresh_from_db()
    assert route.enabled is False


NO_UPSTREAM = "An enabled service needs at least one enabled target, or “Allow registration” on"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "targets",
    [
        {},
        {
            "targets-TOTAL_FORMS": 1,
            "targets-0-url": "http://10.0.0.5:8080",
            "targets-0-weight": 100,
        },  # its only target left unchecked
    ],
    ids=["no-target", "target-disabled"],
)
def test_it_refuses_a_new_service_with_nothing_to_forward_to(admin_client, targets):
    response = admin_client.post(
        "/admin/routing/service/add/", service_form(Service(name="hollow"), **targets)
    )

    assert response.status_code == 200
    assert NO_UPSTREAM in page_text(response)
    assert not Service.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [{"targets-0-enabled": False}, {"targets-0-DELETE": "on"}],
    ids=["disabled", "deleted"],
)
def test_it_refuses_taking_away_a_services_last_enabled_target(admin_client, change):
    service = make_service("thin", "http://10.0.0.5:8080")
    data = {k: v for k, v in (service_form(service) | change).items() if v is not False}

    response = admin_client.post(f"/admin/routing/service/{service.pk}/change/", data)

    assert response.status_code == 200
    assert NO_UPSTREAM in page_text(response)
    assert [(t.url, t.enabled) for t in service.targets.all()] == [("http://10.0.0.5:8080", True)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields",
    [{"allow_registration": True}, {"enabled": False}],
    ids=["registration", "service-disabled"],
)
def test_it_saves_a_service_without_targets_that_cannot_503(admin_client, fields):
    response = admin_client.post(
        "/admin/routing/service/add/", service_form(Service(name="bare", **fields))
    )

    assert response.status_code == 302
    assert Service.objects.filter(name="bare").exists()


@pytest.mark.django_db
def test_the_demo_configuration_passes_the_admins_checks(admin_client):
    call_command("loaddemo", stdout=io.StringIO())
    service = Service.objects.get(name="demo-echo")

    saved_service = admin_client.post(
        f"/admin/routing/service/{service.pk}/change/", service_form(service)
    )
    saved_routes = [
        admin_client.post(
            f"/admin/routing/route/{route.pk}/change/",
            route_form_of(
                route, role_policy=route.role_policy_id or "", strip_prefix=route.strip_prefix
            ),
        )
        for route in Route.objects.filter(service=service)
    ]

    assert saved_service.status_code == 302
    assert [r.status_code for r in saved_routes] == [302, 302]
