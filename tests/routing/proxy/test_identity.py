"""Identity and access end to end: JWTs and role policies, against a real upstream that records
the headers it received."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.contrib.auth.models import Group

from routing.models import RolePolicy
from tests.conftest import make_route, make_service, publish, received
from tests.servers import ServerThread

pytestmark = pytest.mark.django_db


def token(**claims: Any) -> str:
    """An HS256 access token signed with the gateway's shared secret."""
    payload = {
        "user_id": 7,
        "email": "ana@example.com",
        "roles": ["doctor"],
        "token_type": "access",
        "exp": int(time.time()) + 300,
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, settings.PORTIER_JWT_SIGNING_KEY, algorithm="HS256")


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def policy(kind: str, *roles: str) -> RolePolicy:
    created = RolePolicy.objects.create(name=f"{kind}-{'-'.join(roles) or 'none'}", kind=kind)
    created.roles.set([Group.objects.get_or_create(name=role)[0] for role in roles])
    return created


def upstream_headers(server: ServerThread) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in received(server)[-1]["headers"]:
        out.setdefault(name, []).append(value)
    return out


@pytest.fixture
def route_with(upstream):
    def make(kind: str, *roles: str, **fields: Any):
        make_route(
            make_service("svc", upstream.url), "/p", role_policy=policy(kind, *roles), **fields
        )
        publish()

    return make


def test_a_public_route_serves_anonymous_callers_without_identity_headers(
    client, upstream, route_with
):
    route_with("public")

    response = client.get("/p")

    assert response.status_code == 200
    assert not {"x-user-id", "x-user-role", "x-user-roles", "x-user-email"} & set(
        upstream_headers(upstream)
    )


def test_a_public_route_still_refuses_a_bad_token(client, upstream, route_with):
    route_with("public")

    response = client.get("/p", headers=bearer(token(exp=int(time.time()) - 5)))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"
    assert received(upstream) == []


def test_an_authenticated_route_refuses_a_caller_without_credentials(client, upstream, route_with):
    route_with("authenticated")

    response = client.get("/p")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_credentials"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert received(upstream) == []


def test_an_authenticated_route_forwards_the_caller_as_identity_headers(
    client, upstream, route_with
):
    route_with("authenticated")

    response = client.get("/p", headers=bearer(token(roles=["doctor", "admin"])))

    assert response.status_code == 200
    headers = upstream_headers(upstream)
    assert headers["x-user-id"] == ["7"]
    assert headers["x-user-email"] == ["ana@example.com"]
    assert headers["x-user-role"] == ["doctor"]
    assert headers["x-user-roles"] == ["admin,doctor"]


# Admin-only routes write audit rows from the gateway's own threads: commit the test's data.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("kind", "policy_roles", "caller_roles", "status"),
    [
        ("any_of", ("doctor", "nurse"), ["nurse"], 200),
        ("any_of", ("doctor", "nurse"), ["patient"], 403),
        ("all_of", ("doctor", "surgeon"), ["doctor", "surgeon", "x"], 200),
        ("all_of", ("doctor", "surgeon"), ["doctor"], 403),
        ("admin_only", (), ["admin"], 200),
        ("admin_only", (), ["doctor"], 403),
    ],
)
def test_role_policies_allow_and_deny(
    client, upstream, route_with, kind, policy_roles, caller_roles, status
):
    route_with(kind, *policy_roles)

    response = client.get("/p", headers=bearer(token(roles=caller_roles)))

    assert response.status_code == status
    if status == 403:
        assert response.json()["error"]["code"] == "forbidden"
        assert received(upstream) == []


def test_a_single_role_claim_of_another_issuer_is_understood(
    client, upstream, route_with, settings
):
    settings.PORTIER_JWT_USER_ID_CLAIM = "userId"
    settings.PORTIER_JWT_ROLES_CLAIM = "role"
    settings.PORTIER_JWT_REQUIRE_TOKEN_TYPE = False
    route_with("any_of", "doctor")

    seed_style = token(user_id=None, token_type=None, roles=None, userId="u-1", role="doctor")
    response = client.get("/p", headers=bearer(seed_style))

    assert response.status_code == 200
    assert upstream_headers(upstream)["x-user-id"] == ["u-1"]
    assert upstream_headers(upstream)["x-user-role"] == ["doctor"]


def _alg_none(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _tampered() -> str:
    header, payload, signature = token(roles=["doctor"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda: token(exp=int(time.time()) - 5), "token_expired"),
        (lambda: token(nbf=int(time.time()) + 600), "invalid_token"),
        (lambda: token(token_type="refresh"), "invalid_token"),
        (lambda: token(exp=None), "invalid_token"),
        (
            lambda: jwt.encode(
                {"user_id": 7, "token_type": "access", "exp": int(time.time()) + 60},
                "another-secret-" * 4,
                algorithm="HS256",
            ),
            "invalid_token",
        ),
        (
            lambda: _alg_none(
                {
                    "user_id": 7,
                    "roles": ["admin"],
                    "token_type": "access",
                    "exp": int(time.time()) + 60,
                }
            ),
            "invalid_token",
        ),
        (_tampered, "invalid_token"),
        (lambda: "not.a.jwt", "invalid_token"),
        (lambda: token(user_id="7\r\nX-User-Role: admin"), "invalid_token"),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "refresh-token",
        "no-exp",
        "other-key",
        "alg-none",
        "tampered",
        "garbage",
        "header-injection",
    ],
)
def test_it_refuses_tokens_that_cannot_be_trusted(client, upstream, route_with, make_token, code):
    route_with("authenticated")

    response = client.get("/p", headers=bearer(make_token()))

    assert response.status_code == 401
    body = response.json()["error"]
    assert body["code"] == code
    # Why a token failed stays in the gateway's log, never in the answer.
    assert body["message"] in {"The token is not valid.", "The token has expired."}
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert received(upstream) == []


def test_it_checks_issuer_and_audience_when_configured(client, upstream, route_with, settings):
    settings.PORTIER_JWT_ISSUER = "https://auth.example.com"
    settings.PORTIER_JWT_AUDIENCE = "portier"
    route_with("authenticated")
    good = token(iss="https://auth.example.com", aud="portier")

    assert client.get("/p", headers=bearer(good)).status_code == 200
    assert (
        client.get(
            "/p", headers=bearer(token(iss="https://evil.example", aud="portier"))
        ).status_code
        == 401
    )
    assert (
        client.get(
            "/p", headers=bearer(token(iss="https://auth.example.com", aud="other"))
        ).status_code
        == 401
    )
    assert client.get("/p", headers=bearer(token())).status_code == 401


def test_it_refuses_an_hs256_token_signed_with_the_rs256_public_key(
    client, upstream, route_with, settings
):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings.PORTIER_JWT_ALGORITHM = "RS256"
    settings.PORTIER_JWT_VERIFYING_KEY = public_pem
    route_with("authenticated")
    claims = {"user_id": 7, "token_type": "access", "exp": int(time.time()) + 60}
    genuine = jwt.encode(claims, private, algorithm="RS256")
    # Key confusion: the public key (known to anyone) used as an HMAC secret.
    confused = _hs256_with_raw_secret(claims, public_pem.encode())

    assert client.get("/p", headers=bearer(genuine)).status_code == 200
    assert client.get("/p", headers=bearer(confused)).status_code == 401


def _hs256_with_raw_secret(claims: dict[str, Any], secret: bytes) -> str:
    """PyJWT itself refuses PEM keys as HMAC secrets, so the attacker's token is built by hand."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        f"{part(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}."
        f"{part(json.dumps(claims).encode())}"
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature)}"


def test_spoofed_identity_headers_never_reach_the_upstream(client, upstream, route_with):
    route_with("authenticated")

    client.get(
        "/p",
        headers={
            **bearer(token()),
            "X-User-Id": "999",
            "x-user-role": "admin",
            "X-User-Roles": "admin",
            "X-User-Email": "boss@example.com",
            "Connection": "X-Forwarded-For",
        },
    )

    headers = upstream_headers(upstream)
    assert headers["x-user-id"] == ["7"]
    assert headers["x-user-role"] == ["doctor"]
    assert headers["x-user-roles"] == ["doctor"]
    assert headers["x-user-email"] == ["ana@example.com"]


def test_the_authorization_header_is_forwarded_unless_the_route_drops_it(
    client, upstream, upstream_b
):
    anyone = policy("authenticated")
    make_route(make_service("keeps", upstream.url), "/keeps", role_policy=anyone)
    make_route(
        make_service("drops", upstream_b.url),
        "/drops",
        role_policy=anyone,
        forward_authorization=False,
    )
    publish()
    raw = token()

    client.get("/keeps", headers=bearer(raw))
    client.get("/drops", headers=bearer(raw))

    assert upstream_headers(upstream)["authorization"] == [f"Bearer {raw}"]
    assert "authorization" not in upstream_headers(upstream_b)
    assert upstream_headers(upstream_b)["x-user-id"] == ["7"]


class Jwks:
    """An issuer's JWKS endpoint whose keys the test rotates; counts its fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0

    def add_key(self, kid: str) -> Any:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys[kid] = private
        return private

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.fetches += 1
        jwks = {
            "keys": [
                {
                    **json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())),
                    "kid": kid,
                    "alg": "RS256",
                    "use": "sig",
                }
                for kid, key in self.keys.items()
            ]
        }
        body = json.dumps(jwks).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def jwks(settings):
    issuer = Jwks()
    server = ServerThread(issuer).start()
    settings.PORTIER_JWT_ALGORITHM = "RS256"
    settings.PORTIER_JWT_JWKS_URL = server.url + "/.well-known/jwks.json"
    settings.PORTIER_JWT_JWKS_MIN_REFRESH = 0.0
    yield issuer
    server.stop()


def rs256(private: Any, kid: str) -> str:
    claims = {"user_id": 7, "token_type": "access", "exp": int(time.time()) + 60}
    return jwt.encode(claims, private, algorithm="RS256", headers={"kid": kid})


def test_it_follows_a_jwks_key_rotation(client, upstream, route_with, jwks):
    route_with("authenticated")
    first = jwks.add_key("k1")
    assert client.get("/p", headers=bearer(rs256(first, "k1"))).status_code == 200

    del jwks.keys["k1"]
    second = jwks.add_key("k2")

    # The unknown kid makes the gateway fetch the set again; the retired key stops working.
    assert client.get("/p", headers=bearer(rs256(second, "k2"))).status_code == 200
    assert client.get("/p", headers=bearer(rs256(first, "k1-new"))).status_code == 401


def test_unknown_key_ids_do_not_fetch_the_jwks_per_request(
    client, upstream, route_with, jwks, settings
):
    route_with("authenticated")
    key = jwks.add_key("k1")
    assert client.get("/p", headers=bearer(rs256(key, "k1"))).status_code == 200
    settings.PORTIER_JWT_JWKS_MIN_REFRESH = 60.0
    fetches = jwks.fetches

    statuses = {
        client.get("/p", headers=bearer(rs256(key, f"random-{i}"))).status_code for i in range(20)
    }

    assert statuses == {401}
    assert jwks.fetches - fetches <= 1
