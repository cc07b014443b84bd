"""Tokens signed with the right key but holding claims of the wrong type are refused with 401
invalid_token, never guessed at and never a 500; the upstream sees none of them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from django.conf import settings

from tests.conftest import make_route, make_service, publish, received

pytestmark = pytest.mark.django_db

FUTURE = int(time.time()) + 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: dict[str, Any]) -> str:
    """HS256 by hand: PyJWT refuses to encode some of these claims (an `iss` that is not a
    string), and a client's token need not come from PyJWT."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    key = settings.PORTIER_JWT_SIGNING_KEY.encode()
    signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def token(**claims: Any) -> str:
    """A valid HS256 access token signed with the gateway's key, with `claims` changed (None
    removes one)."""
    payload: dict[str, Any] = {
        "user_id": 7,
        "email": "ana@example.com",
        "roles": ["doctor"],
        "token_type": "access",
        "iat": int(time.time()),
        "exp": int(time.time()) + 300,
    }
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    return signed(payload)


@pytest.fixture
def public_route(upstream) -> None:
    make_route(make_service("svc", upstream.url), "/p")
    publish()


MALFORMED = {
    "exp": [str(FUTURE), "soon", [FUTURE], {"at": FUTURE}, True, 1e300, float("nan"), None],
    "nbf": [{"at": 0}, [0], "0", True],
    "iat": [{"at": 0}, [0], "now", True, float("inf")],
    "user_id": [[7], {"id": 7}, True, False, 7.5, "", None],
    "email": [42, 0, False, ["ana@example.com"], {"address": "ana@example.com"}],
    "roles": [{"doctor": True}, 5, True, ["doctor", 5], [["doctor"]], [{"name": "doctor"}]],
    "token_type": [["access"], {"type": "access"}, 1],
    "iss": [5, ["portier"], {"name": "portier"}],
    "aud": [5, {"name": "portier"}, ["portier", 3]],
    "jti": [5, ["x"]],
}


@pytest.mark.parametrize(
    ("claim", "value"),
    [(claim, value) for claim, values in MALFORMED.items() for value in values],
    ids=[f"{claim}={value!r}" for claim, values in MALFORMED.items() for value in values],
)
def test_a_claim_of_the_wrong_type_is_an_invalid_token(
    client, upstream, public_route, claim, value
):
    response = client.get("/p", headers={"Authorization": f"Bearer {token(**{claim: value})}"})

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_token"
    assert error["request_id"] == response.headers["x-request-id"]
    assert received(upstream) == []


@pytest.mark.parametrize(
    ("claim", "value"),
    [("iss", 5), ("iss", ["portier"]), ("aud", 5), ("aud", {"name": "portier"}), ("aud", [3])],
)
def test_with_issuer_and_audience_required_their_wrong_types_are_invalid_tokens(
    client, upstream, public_route, settings, claim, value
):
    settings.PORTIER_JWT_ISSUER = "portier"
    settings.PORTIER_JWT_AUDIENCE = "gateway"
    good = token(iss="portier", aud="gateway")
    assert client.get("/p", headers={"Authorization": f"Bearer {good}"}).status_code == 200
    received(upstream).clear()

    bad = token(**{"iss": "portier", "aud": "gateway", claim: value})
    response = client.get("/p", headers={"Authorization": f"Bearer {bad}"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
    assert received(upstream) == []


@pytest.mark.parametrize(
    "claims",
    [
        {},
        {"user_id": "u-7"},
        {"email": None, "roles": None},
        {"roles": "doctor"},
        {"iat": None, "nbf": int(time.time()) - 5},
        {"aud": None, "iss": "someone"},
    ],
    ids=["ours", "string-id", "no-email-no-roles", "one-role-string", "nbf-no-iat", "iss"],
)
def test_well_typed_tokens_still_pass(client, upstream, public_route, claims):
    response = client.get("/p", headers={"Authorization": f"Bearer {token(**claims)}"})

    assert response.status_code == 200
    assert len(received(upstream)) == 1
