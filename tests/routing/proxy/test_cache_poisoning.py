"""No caller can plant an answer in the cache for another: the key covers everything the upstream
is shown that can change its answer (the Host with its port, the scheme, X-Forwarded-Host from a
trusted proxy, headers a transform writes, the query's exact bytes), and the upstream's Vary is
judged on the headers it received, not the ones the client sent."""

from __future__ import annotations

import time

import pytest

from tests.conftest import publish
from tests.routing.proxy.cache_upstream import cached_route

pytestmark = pytest.mark.django_db


def test_a_host_with_another_port_gets_its_own_entry(client, cache_upstream):
    cached_route(cache_upstream, "/h")
    planted = client.get("/h/x", headers={"Host": "api.example.com:1337"})
    victim = client.get("/h/x", headers={"Host": "api.example.com"})
    assert planted.headers["x-cache"] == "MISS"
    assert victim.headers["x-cache"] == "MISS"
    assert victim.json()["call"] == 2
    forwarded = [r["headers"]["x-forwarded-host"] for r in cache_upstream.app.requests]
    assert forwarded == ["api.example.com:1337", "api.example.com"]


def test_a_trusted_proxys_forwarded_host_and_scheme_are_part_of_the_key(
    client, cache_upstream, settings
):
    settings.PORTIER_TRUSTED_PROXIES = ["127.0.0.1/32"]
    cached_route(cache_upstream, "/fh")
    client.get("/fh/x", headers={"X-Forwarded-Host": "evil.example"})
    other_host = client.get("/fh/x", headers={"X-Forwarded-Host": "api.example.com"})
    https = client.get("/fh/x", headers={"X-Forwarded-Proto": "https"})
    again = client.get("/fh/x", headers={"X-Forwarded-Proto": "https"})
    assert other_host.headers["x-cache"] == "MISS"
    assert https.headers["x-cache"] == "MISS"
    assert again.headers["x-cache"] == "HIT"
    assert cache_upstream.app.calls["/fh/x"] == 3


def test_the_upstreams_vary_is_judged_on_the_headers_it_received(client, cache_upstream):
    route = cached_route(cache_upstream, "/tv", publish_now=False)
    route.transform = {"request": {"headers": {"rename": {"X-Customer": "Accept-Language"}}}}
    route.save()
    publish()
    cache_upstream.app.headers["/tv/x"] = [("Vary", "Accept-Language")]
    acme = client.get("/tv/x", headers={"X-Customer": "acme"})
    globex = client.get("/tv/x", headers={"X-Customer": "globex"})
    acme_again = client.get("/tv/x", headers={"X-Customer": "acme"})
    assert (acme.json()["lang"], globex.json()["lang"]) == ("acme", "globex")
    assert globex.headers["x-cache"] == "MISS"
    assert acme_again.headers["x-cache"] == "HIT" and acme_again.json()["lang"] == "acme"


def test_a_header_a_transform_writes_from_the_callers_address_splits_the_key(
    client, cache_upstream, settings
):
    settings.PORTIER_TRUSTED_PROXIES = ["127.0.0.1/32"]
    route = cached_route(cache_upstream, "/ip", publish_now=False)
    route.transform = {"request": {"headers": {"set": {"X-Caller-IP": "$client_ip"}}}}
    route.save()
    publish()
    first = client.get("/ip/x", headers={"X-Forwarded-For": "203.0.113.1"})
    second = client.get("/ip/x", headers={"X-Forwarded-For": "203.0.113.2"})
    repeat = client.get("/ip/x", headers={"X-Forwarded-For": "203.0.113.1"})
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "MISS")
    assert repeat.headers["x-cache"] == "HIT" and repeat.content == first.content


@pytest.mark.parametrize(
    ("first", "second"),
    [("file=caf%E9", "file=caf%E8"), ("flag", "flag="), ("a=%2B", "a=+")],
)
def test_queries_the_upstream_tells_apart_are_never_one_entry(
    client, cache_upstream, first, second
):
    cached_route(cache_upstream, "/raw")
    client.get(f"/raw/x?{first}")
    other = client.get(f"/raw/x?{second}")
    assert other.headers["x-cache"] == "MISS"
    assert other.json()["query"] == second


def test_a_cached_404_never_answers_a_conditional_request_with_304(client, cache_upstream):
    cached_route(cache_upstream, "/nf")
    cache_upstream.app.status["/nf/x"] = 404
    client.get("/nf/x")
    conditional = client.get("/nf/x", headers={"If-None-Match": "*"})
    assert conditional.status_code == 404
    assert conditional.headers["x-cache"] == "HIT"


def test_a_must_revalidate_answer_is_never_served_stale(client, cache_upstream):
    cached_route(cache_upstream, "/mr", ttl=1, stale_if_error=60)
    cache_upstream.app.headers["/mr/x"] = [("Cache-Control", "max-age=1, must-revalidate")]
    client.get("/mr/x")
    cache_upstream.app.status["/mr/x"] = 503
    time.sleep(1.2)  # past its freshness (not a speed assertion: the answer's own max-age)
    failed = client.get("/mr/x")
    assert failed.status_code == 503
    assert failed.headers.get("x-cache") != "STALE"
