"""Django's own refusals on the gateway's paths answer in the one JSON error shape, never an
HTML page: a 400 (too many form fields) and a 404 under a reserved prefix."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_a_request_django_refuses_is_a_json_400_with_its_request_id():
    fields = "&".join(f"f{n}=1" for n in range(1500))  # past DATA_UPLOAD_MAX_NUMBER_FIELDS

    response = Client().post(
        "/admin/login/",
        fields,
        content_type="application/x-www-form-urlencoded",
        HTTP_X_REQUEST_ID="form-flood-1",
    )

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == {
        "code": "bad_request",
        "message": "The request is not valid.",
        "request_id": "form-flood-1",
    }
    assert response["X-Request-ID"] == "form-flood-1"
