"""Admission end to end: the HTTPS redirect (and its refusal of a body it cannot carry over), and
a route's IP allow and deny lists, judged on the client address through trusted proxies."""

from __future__ import annotations

import pytest

from tests.conftest import make_route, make_service, publish, received

pytestmark = pytest.mark.django_db

HOST = {"Host": "api.example.com"}


def route(server, path: str = "/a", **fields) -> None:
    make_route(make_service("svc", server.url), path, **fields)
    publish()


def test_a_plain_http_get_is_redirected_to_https_with_its_path_and_query(client, upstream):
    route(upstream, https_redirect=True)

    response = client.get("/a/b%20c?x=1&y=%2F", headers=HOST)

    assert response.status_code == 308
    assert response.headers["location"] == "https://api.example.com/a/b%20c?x=1&y=%2F"
    assert response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert received(upstream) == []


def test_a_plain_http_post_with_a_body_is_refused_not_redirected(client, upstream):
    route(upstream, https_redirect=True)

    response = client.post("/a", json={"card": "4111"}, headers=HOST)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "https_required"
    assert "location" not in response.headers
    assert received(upstream) == []


def test_no_redirect_when_a_trusted_proxy_says_the_client_is_on_https(client, upstream, settings):
    settings.PORTIER_TRUSTED_PROXIES = ["127.0.0.1/32"]
    route(upstream, https_redirect=True)

    response = client.get("/a", headers={**HOST, "X-Forwarded-Proto": "https"})

    assert response.status_code == 200
    assert received(upstream)[-1]["path"] == "/a"


def test_an_untrusted_peer_claiming_https_is_still_redirected(client, upstream):
    route(upstream, https_redirect=True)

    response = client.get("/a", headers={**HOST, "X-Forwarded-Proto": "https"})

    assert response.status_code == 308
    assert response.headers["location"] == "https://api.example.com/a"
    assert received(upstream) == []


def test_the_gateway_wide_redirect_applies_unless_the_route_turns_it_off(
    client, upstream, gateway_defaults
):
    service = make_service("svc", upstream.url)
    make_route(service, "/a")
    make_route(service, "/plain", https_redirect=False)
    gateway_defaults(https_redirect=True)

    assert client.get("/a", headers=HOST).status_code == 308
    assert client.get("/plain", headers=HOST).status_code == 200


def test_a_host_that_is_not_a_host_name_is_not_redirected_to(gateway, upstream):
    from tests.raw_http import raw_exchange

    route(upstream, https_redirect=True)

    answer = raw_exchange(gateway.url, b"GET /a HTTP/1.1\r\nHost: evil.com@api.example.com")

    assert answer.status == 400
    assert answer.header("location") is None
    assert received(upstream) == []


def test_a_deny_list_refuses_the_client(client, upstream):
    route(upstream, ip_deny=["127.0.0.0/8"])

    response = client.get("/a")

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "ip_forbidden"
    assert error["request_id"] == response.headers["x-request-id"]
    assert received(upstream) == []


def test_an_allow_list_admits_only_its_addresses(client, upstream):
    service = make_service("svc", upstream.url)
    make_route(service, "/a", ip_allow=["127.0.0.1"])
    make_route(service, "/b", ip_allow=["10.0.0.0/8", "2001:db8::/32"])
    publish()

    assert client.get("/a").status_code == 200
    refused = client.get("/b")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ip_forbidden"
    assert len(received(upstream)) == 1


def test_deny_wins_over_allow(client, upstream):
    route(upstream, ip_allow=["127.0.0.0/8"], ip_deny=["127.0.0.1/32"])

    response = client.get("/a")

    assert response.status_code == 403
    assert received(upstream) == []


def test_through_a_trusted_proxy_the_forwarded_client_is_judged(client, upstream, settings):
    settings.PORTIER_TRUSTED_PROXIES = ["127.0.0.1/32"]
    route(upstream, ip_deny=["203.0.113.0/24"])

    denied = client.get("/a", headers={"X-Forwarded-For": "203.0.113.9"})
    admitted = client.get("/a", headers={"X-Forwarded-For": "198.51.100.4"})
    spoofed = client.get("/a", headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.4"})

    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "ip_forbidden"
    assert admitted.status_code == 200
    # The rightmost untrusted hop is the client: an address written further left is its claim.
    assert spoofed.status_code == 200
    assert len(received(upstream)) == 2


def test_an_ipv4_mapped_ipv6_address_meets_the_ipv4_lists(client, upstream, settings):
    """What a dual-stack listener or proxy reports for an IPv4 client."""
    settings.PORTIER_TRUSTED_PROXIES = ["127.0.0.1/32"]
    service = make_service("svc", upstream.url)
    make_route(service, "/a", ip_deny=["203.0.113.0/24"])
    make_route(service, "/b", ip_allow=["198.51.100.0/24"])
    publish()

    denied = client.get("/a", headers={"X-Forwarded-For": "::ffff:203.0.113.9"})
    allowed = client.get("/b", headers={"X-Forwarded-For": "::ffff:198.51.100.4"})

    assert denied.status_code == 403
    assert allowed.status_code == 200


def test_without_trusted_proxies_a_forwarded_address_is_ignored(client, upstream):
    service = make_service("svc", upstream.url)
    make_route(service, "/a", ip_deny=["203.0.113.0/24"])
    make_route(service, "/b", ip_allow=["203.0.113.0/24"])
    publish()

    not_denied = client.get("/a", headers={"X-Forwarded-For": "203.0.113.9"})
    not_allowed = client.get("/b", headers={"X-Forwarded-For": "203.0.113.9"})

    assert not_denied.status_code == 200
    assert not_allowed.status_code == 403
