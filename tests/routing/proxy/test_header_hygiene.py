"""Header hygiene end to end: what the upstream receives when a client writes headers that only
the gateway, or a proxy the gateway trusts, may write. Sent over a raw socket, so each name
reaches the gateway spelled exactly as written."""

from __future__ import annotations

import subprocess
import sys
import time

import jwt
import pytest
from django.conf import settings

from tests.conftest import make_route, make_service, publish, received
from tests.raw_http import raw_exchange

pytestmark = pytest.mark.django_db

# One per family, in the spellings clients send.
IDENTITY_HEADERS = [
    "X-User-Id",
    "x-user-role",
    "X-USER-ROLES",
    "X-User-Email",
    "X-User-Tenant",
    "X-User-Is-Admin",
    "X-Consumer-ID",
    "X-Consumer-Custom-ID",
    "x-consumer-username",
    "X-Consumer-Groups",
    "X-Credential-Identifier",
    "X-Credential-Username",
    "X-Authenticated-Userid",
    "X-Authenticated-Scope",
    "X-AUTHENTICATED-GROUPS",
    "X-Anonymous-Consumer",
    "x-Anonymous-CONSUMER",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Access-Token",
    "X-Auth-Request-User",
    "X-Amzn-Oidc-Identity",
    "X-Goog-Authenticated-User-Email",
    "X-MS-CLIENT-PRINCIPAL-NAME",
    "Cf-Access-Authenticated-User-Email",
    "Remote-User",
    "X-Remote-User",
    "X-Userinfo",
]


def sent(server) -> dict[str, list[str]]:
    """The headers the upstream received last, by lower-case name."""
    out: dict[str, list[str]] = {}
    for name, value in received(server)[-1]["headers"]:
        out.setdefault(name, []).append(value)
    return out


def get(url: str, path: str, *headers: str) -> int:
    head = f"GET {path} HTTP/1.1\r\nHost: api.example.com\r\n" + "".join(
        f"{header}\r\n" for header in headers
    )
    return raw_exchange(url, head.encode("latin-1")).status


def bearer(**claims: object) -> str:
    payload = {
        "user_id": 7,
        "email": "ana@example.com",
        "roles": ["doctor"],
        "token_type": "access",
        "exp": int(time.time()) + 300,
        **claims,
    }
    raw = jwt.encode(payload, settings.PORTIER_JWT_SIGNING_KEY, algorithm="HS256")
    return f"Authorization: Bearer {raw}"


@pytest.fixture
def route(upstream):
    make_route(make_service("svc", upstream.url), "/p")
    publish()


@pytest.mark.parametrize("name", IDENTITY_HEADERS)
def test_it_never_forwards_a_client_written_identity_header_of_any_family(
    gateway, upstream, route, name
):
    status = get(gateway.url, "/p", f"{name}: admin", "X-Userland: kept", "X-Consumerism: kept")

    assert status == 200
    headers = sent(upstream)
    assert name.lower() not in headers
    assert "admin" not in {value for values in headers.values() for value in values}
    # Only the families go: a name that merely starts alike still arrives.
    assert headers["x-userland"] == ["kept"]
    assert headers["x-consumerism"] == ["kept"]


@pytest.mark.parametrize(
    "name",
    ["X_User_Id", "x_consumer_id", "X_Anonymous_Consumer", "X-Credential_Username", "X_Real_IP"],
)
def test_underscored_spellings_of_identity_headers_never_arrive(
    gateway, upstream, route, settings, name
):
    for allow in (False, True):
        settings.PORTIER_ALLOW_UNDERSCORE_HEADERS = allow

        status = get(gateway.url, "/p", f"{name}: admin", "X_Custom_Thing: ok")

        assert status == 200
        headers = sent(upstream)
        assert not {n for n in headers if n.replace("_", "-") == name.lower().replace("_", "-")}
        assert ("x_custom_thing" in headers) is allow  # the setting still does its job


def test_the_gateways_own_identity_headers_arrive_after_the_clients_are_stripped(
    gateway, upstream, route
):
    status = get(
        gateway.url,
        "/p",
        bearer(roles=["doctor"]),
        "X-User-Id: 1",
        "X-User-Roles: admin",
        "X-User-Role: admin",
        "X-User-Email: root@evil.example",
        "X-User-Tenant: evil",
        "X-Consumer-Username: root",
    )

    assert status == 200
    headers = sent(upstream)
    assert headers["x-user-id"] == ["7"]
    assert headers["x-user-email"] == ["ana@example.com"]
    assert headers["x-user-role"] == ["doctor"]
    assert headers["x-user-roles"] == ["doctor"]
    assert "x-user-tenant" not in headers
    assert "x-consumer-username" not in headers


def test_configured_prefixes_are_stripped_too(gateway, upstream, route, settings):
    before = get(gateway.url, "/p", "X-Acme-Tenant: evil")
    assert before == 200
    assert sent(upstream)["x-acme-tenant"] == ["evil"]  # not an identity header by default

    settings.PORTIER_IDENTITY_HEADER_PREFIXES = ("x-acme-", "x-tenant")
    settings.PORTIER_ALLOW_UNDERSCORE_HEADERS = True
    status = get(
        gateway.url,
        "/p",
        "X-Acme-Tenant: evil",
        "X-ACME-ROLE: admin",
        "X_Acme_Org: evil",
        "X-Tenant-Id: evil",
        "X-Acmeish: kept",
    )

    assert status == 200
    headers = sent(upstream)
    assert not {"x-acme-tenant", "x-acme-role", "x_acme_org", "x-tenant-id"} & set(headers)
    assert headers["x-acmeish"] == ["kept"]


@pytest.mark.parametrize(
    "header",
    [
        "Proxy: http://attacker.example:8080",
        "PROXY: http://attacker.example:8080",
        "X-Original-URL: /admin",
        "X-Rewrite-URL: /admin",
        "X-Original-URI: /admin",
    ],
)
def test_it_drops_httpoxy_and_path_override_headers(gateway, upstream, route, settings, header):
    for trusted in ([], ["127.0.0.1/32"]):  # even from a trusted proxy
        settings.PORTIER_TRUSTED_PROXIES = trusted

        status = get(gateway.url, "/p", header)

        assert status == 200
        headers = sent(upstream)
        assert header.split(":")[0].lower() not in headers
        assert received(upstream)[-1]["path"] == "/p"


def test_an_untrusted_client_cannot_write_forwarding_headers(gateway, upstream, route):
    status = get(
        gateway.url,
        "/p",
        "X-Forwarded-For: 203.0.113.9",
        "x-forwarded-for: 198.51.100.1, 10.0.0.1",
        "X-Forwarded-Proto: https",
        "X-FORWARDED-HOST: evil.example",
        "X-Forwarded-Port: 443",
        "X-Forwarded-Prefix: /admin",
        "X-Forwarded-Server: evil",
        "X-Real-IP: 203.0.113.9",
        "Forwarded: for=203.0.113.9;proto=https",
        "True-Client-IP: 203.0.113.9",
        "X-Client-IP: 203.0.113.9",
        "X-Cluster-Client-IP: 203.0.113.9",
    )

    assert status == 200
    headers = sent(upstream)
    # Replaced, not appended to: the leftmost address is the socket peer.
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["api.example.com"]
    for name in (
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-real-ip",
        "forwarded",
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
    ):
        assert name not in headers


def test_a_trusted_proxy_extends_the_chain_and_keeps_its_forwarding_headers(
    gateway, upstream, route, settings
):
    settings.PORTIER_TRUSTED_PROXIES = ["127.0.0.1/32"]

    status = get(
        gateway.url,
        "/p",
        "X-Forwarded-For: 203.0.113.9",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: api.example.com",
        "X-Real-IP: 203.0.113.9",
        "X-Consumer-ID: 1",  # identity stays the gateway's alone, trusted proxy or not
    )

    assert status == 200
    headers = sent(upstream)
    assert headers["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["x-forwarded-host"] == ["api.example.com"]
    assert headers["x-real-ip"] == ["203.0.113.9"]
    assert "x-consumer-id" not in headers


def test_a_trusted_proxy_without_forwarding_headers_gets_the_gateways_own(
    gateway, upstream, route, settings
):
    settings.PORTIER_TRUSTED_PROXIES = ["127.0.0.1/32"]

    assert get(gateway.url, "/p") == 200

    headers = sent(upstream)
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["api.example.com"]


@pytest.mark.parametrize("value", ["x acme", "x-acme-é", "x:acme"])
def test_a_bad_identity_header_prefix_stops_the_start(value):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            "DJANGO_SETTINGS_MODULE": "gateway_site.settings",
            "PATH": "",
            "PORTIER_IDENTITY_HEADER_PREFIXES": f"x-ok-, {value}",
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=settings.BASE_DIR,
    )

    assert result.returncode != 0
    assert "PORTIER_IDENTITY_HEADER_PREFIXES" in result.stderr


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (b"Authorization: Bearer a.b.c", b"Authorization: Bearer d.e.f"),
        (b"X-API-Key: ptr_one", b"X-Api-Key: ptr_two"),
    ],
)
def test_a_repeated_credential_header_is_refused_and_never_forwarded(
    gateway, upstream, first, second
):
    service = make_service("credentials-twice", upstream.url)
    make_route(service, "/twice")
    publish()

    head = b"\r\n".join(
        [b"GET /twice/x HTTP/1.1", b"Host: gw.test", first, second, b"Connection: close", b"", b""]
    )
    answer = raw_exchange(gateway.url, head)

    assert answer.status == 400
    assert answer.json()["error"]["code"] == "bad_request"
    assert received(upstream) == []
