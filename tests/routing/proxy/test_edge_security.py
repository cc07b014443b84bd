"""Security headers end to end: the built-in set on upstream answers and on the gateway's own,
an upstream's own values kept or replaced, Server and X-Powered-By dropped, and HSTS only to a
client that is on HTTPS as far as the gateway can tell."""

from __future__ import annotations

import pytest

from tests.conftest import make_route, make_service, publish

pytestmark = pytest.mark.django_db

BUILT_IN = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}


def route(server, path: str = "/s", **fields) -> None:
    make_route(make_service("svc", server.url), path, **fields)
    publish()


def answer_with(server, *headers: tuple[bytes, bytes]) -> None:
    server.app.answers["/s"] = (200, [(b"content-type", b"text/plain"), *headers], b"hello")


def security_headers(response) -> dict[str, str]:
    names = {*BUILT_IN, "strict-transport-security", "content-security-policy"}
    return {name: response.headers[name] for name in names if name in response.headers}


def test_the_built_in_headers_are_on_upstream_answers_and_gateway_errors(client, upstream):
    route(upstream)

    proxied = client.get("/s")
    missing = client.get("/nowhere")
    refused = client.get("/s", headers={"Authorization": "Bearer not-a-token"})

    assert proxied.status_code == 200 and proxied.json()["path"] == "/s"
    assert missing.status_code == 404 and refused.status_code == 401
    for response in (proxied, missing, refused):
        assert security_headers(response) == BUILT_IN  # and no HSTS over plain HTTP


def test_an_upstreams_own_frame_options_are_kept_unless_the_route_overrides(
    client, headers_upstream
):
    answer_with(headers_upstream, (b"x-frame-options", b"SAMEORIGIN"))
    headers_upstream.app.answers["/o"] = headers_upstream.app.answers["/s"]
    service = make_service("svc", headers_upstream.url)
    make_route(service, "/s")
    make_route(service, "/o", security_headers={"override": True})
    publish()

    kept = client.get("/s")
    replaced = client.get("/o")

    assert kept.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert kept.headers["x-content-type-options"] == "nosniff"
    assert replaced.headers.get_list("x-frame-options") == ["DENY"]


def test_server_and_powered_by_are_dropped_unless_hide_server_is_off(client, headers_upstream):
    answer_with(headers_upstream, (b"server", b"Apache/2.4.1"), (b"x-powered-by", b"PHP/5.6"))
    headers_upstream.app.answers["/k"] = headers_upstream.app.answers["/s"]
    service = make_service("svc", headers_upstream.url)
    make_route(service, "/s")
    make_route(service, "/k", security_headers={"hide_server": False})
    publish()

    hidden = client.get("/s")
    shown = client.get("/k")

    assert "server" not in hidden.headers and "x-powered-by" not in hidden.headers
    assert shown.headers["server"] == "Apache/2.4.1"
    assert shown.headers["x-powered-by"] == "PHP/5.6"
    assert shown.headers["x-frame-options"] == "DENY"


def test_hsts_is_sent_only_when_a_trusted_proxy_says_the_client_is_on_https(
    client, upstream, settings
):
    route(upstream)

    plain = client.get("/s")
    untrusted_claim = client.get("/s", headers={"X-Forwarded-Proto": "https"})
    settings.PORTIER_TRUSTED_PROXIES = ["127.0.0.1/32"]
    trusted = client.get("/s", headers={"X-Forwarded-Proto": "https"})
    trusted_plain = client.get("/s", headers={"X-Forwarded-Proto": "http"})

    assert "strict-transport-security" not in plain.headers
    assert "strict-transport-security" not in untrusted_claim.headers
    assert trusted.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert "strict-transport-security" not in trusted_plain.headers


def test_hsts_follows_its_settings_on_gateway_errors_too(client, upstream, settings):
    settings.PORTIER_TRUSTED_PROXIES = ["127.0.0.1/32"]
    route(upstream, security_headers={"hsts_max_age": 600, "hsts_preload": True})

    response = client.get("/s", headers={"X-Forwarded-Proto": "https", "Authorization": "Bearer x"})

    assert response.status_code == 401
    assert response.headers["strict-transport-security"] == (
        "max-age=600; includeSubDomains; preload"
    )


def test_enabled_false_turns_the_headers_off(client, upstream, gateway_defaults):
    route(upstream)
    gateway_defaults(security_headers={"enabled": False})

    proxied = client.get("/s")
    missing = client.get("/nowhere")

    assert security_headers(proxied) == {} and security_headers(missing) == {}


def test_a_route_lays_its_keys_over_the_gateway_wide_block(client, upstream, gateway_defaults):
    service = make_service("svc", upstream.url)
    make_route(service, "/s")
    make_route(
        service,
        "/own",
        security_headers={
            "frame_options": "SAMEORIGIN",
            "content_security_policy": "default-src 'none'",
        },
    )
    gateway_defaults(
        security_headers={"referrer_policy": "strict-origin", "content_type_options": False}
    )

    inherited = client.get("/s")
    own = client.get("/own")

    assert security_headers(inherited) == {
        "x-frame-options": "DENY",
        "referrer-policy": "strict-origin",
        "cross-origin-resource-policy": "same-origin",
    }
    assert security_headers(own) == {
        "x-frame-options": "SAMEORIGIN",
        "referrer-policy": "strict-origin",
        "cross-origin-resource-policy": "same-origin",
        "content-security-policy": "default-src 'none'",
    }
