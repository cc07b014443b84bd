"""The route page as an admin sees it: help text shown as written, the upload options with the
other forwarding options, and a route's own body limit saved and served."""

from __future__ import annotations

import re

import pytest

from routing.models import Route
from tests.conftest import make_service
from tests.routing.test_admin import route_form

pytestmark = pytest.mark.django_db


def test_it_shows_the_rewrite_template_literally(admin_client):
    page = admin_client.get("/admin/routing/route/add/").content.decode()

    # Escaped once in the HTML, so the browser shows /v2/\g<id>; raw, it would vanish as a tag.
    assert r"/v2/\g&lt;id&gt;" in page
    assert r"\g<id>" not in page
    assert "&amp;lt;" not in page  # not escaped twice either


def test_it_lists_the_upload_options_among_the_forwarding_options(admin_client):
    page = admin_client.get("/admin/routing/route/add/").content.decode()

    forwarding = re.search(r"<h2[^>]*>\s*Forwarding\s*</h2>(.*?)</fieldset>", page, re.S)
    assert forwarding is not None
    assert 'name="stream_uploads"' in forwarding.group(1)
    assert 'name="max_body_bytes"' in forwarding.group(1)


def test_it_saves_a_route_with_its_own_body_limit_and_blank_means_the_global_one(admin_client):
    service = make_service("files", "http://127.0.0.1:9")
    form = route_form(
        name="uploads",
        service=service.pk,
        path="/uploads",
        stream_uploads="on",
        max_body_bytes="52428800",
    )
    limited = admin_client.post("/admin/routing/route/add/", form)
    blank = admin_client.post(
        "/admin/routing/route/add/",
        route_form(name="plain", service=service.pk, path="/plain", max_body_bytes=""),
    )
    zero = admin_client.post(
        "/admin/routing/route/add/", {**form, "name": "zero", "path": "/z", "max_body_bytes": "0"}
    )

    assert (limited.status_code, blank.status_code) == (302, 302)
    assert zero.status_code == 200  # the form again, with its error
    assert list(Route.objects.values_list("name", "stream_uploads", "max_body_bytes")) == [
        ("plain", False, None),
        ("uploads", True, 52428800),
    ]
