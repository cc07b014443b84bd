"""The route tester in the admin (routing.admin_tester): listed under Routing on the index,
linked from a route's page with its path and first method filled in, and the form's findings
shown as a report, from the live snapshot and without calling the upstream."""

from __future__ import annotations

import html

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from accounts.models import User
from routing.models import RolePolicy
from tests.conftest import make_route, make_service, publish, received

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/admin/routing/tester/"


def test_the_index_lists_it_and_the_page_renders_its_form(admin_client):
    index = admin_client.get("/admin/").content.decode()
    assert PAGE in index and "Route tester" in index

    page = admin_client.get(PAGE, {"path": "/users", "method": "POST"})
    assert page.status_code == 200
    text = page.content.decode()
    assert 'name="path" id="id_path" value="/users"' in text
    assert 'name="method" id="id_method" value="POST"' in text


def test_a_routes_page_links_to_it_with_its_path_and_method(admin_client):
    route = make_route(
        make_service("users", "http://127.0.0.1:9"), "/users", name="users", methods="PUT, GET"
    )
    page = html.unescape(
        admin_client.get(f"/admin/routing/route/{route.pk}/change/").content.decode()
    )
    assert "Test this route" in page
    assert f"{PAGE}?path=/users&method=PUT" in page

    followed = admin_client.get(PAGE, {"path": "/users", "method": "PUT"}).content.decode()
    assert 'value="/users"' in followed and 'value="PUT"' in followed


def test_the_form_shows_the_findings(admin_client, upstream):
    service = make_service("svc", upstream.url)
    make_route(service, "/api", name="v2", priority=20, header_matches={"X-Version": "2"})
    make_route(service, "/api", name="main", priority=10, strip_prefix=True)
    publish()

    answer = admin_client.post(
        PAGE,
        {
            "method": "GET",
            "host": "api.example.com",
            "path": "/api/items?x=1",
            "headers": "X-Version: 1\nX-Client: yes",
            "token": "",
        },
    )

    assert answer.status_code == 200
    text = html.unescape(answer.content.decode())
    assert "Forwarded to the upstream." in text
    assert "<strong>matched</strong>" in text
    assert "lost: headers do not match (x-version: 2)" in text
    assert '<td class="upstream-path">/items</td>' in text
    assert '<td class="upstream-query">x=1</td>' in text
    assert "x-client: yes" in text
    assert f'<strong class="picked">{upstream.url}</strong>' in text
    assert received(upstream) == []


def test_the_form_tests_as_a_user(admin_client, upstream):
    nurse = User.objects.create_user("nora", password="pw-9x-long")
    nurse.groups.add(Group.objects.create(name="nurse"))
    make_route(
        make_service("svc", upstream.url),
        "/charts",
        name="charts",
        role_policy=RolePolicy.objects.create(name="doctors", kind="any_of"),
    )
    RolePolicy.objects.get(name="doctors").roles.add(Group.objects.create(name="doctor"))
    publish()

    form = admin_client.get(PAGE).content.decode()
    answer = admin_client.post(PAGE, {"method": "GET", "path": "/charts", "user": "nora"})

    assert 'name="user"' in form
    text = html.unescape(answer.content.decode())
    assert "roles nurse" in text
    assert "Stopped at <strong>policy</strong>: 403 forbidden" in text
    assert received(upstream) == []


def test_bad_input_is_shown_on_the_form(admin_client):
    answer = admin_client.post(PAGE, {"method": "GET", "path": "nope", "headers": "no colon"})
    assert answer.status_code == 400
    text = answer.content.decode()
    assert "A path starting with /" in text and "no colon" in text


def test_staff_without_view_route_may_not_open_it():
    staff = User.objects.create_user("staff", password="pw-9x-long", is_staff=True)
    client = Client()
    client.force_login(staff)
    assert client.get(PAGE).status_code == 403
