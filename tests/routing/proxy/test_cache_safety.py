"""What the shared response cache must never do: keep what the upstream said not to keep, keep an
answer too large, outlive the upstream's freshness, hand an authenticated answer to someone else,
or replay one request's own headers to another."""

from __future__ import annotations

import time
from email.utils import formatdate

import jwt
import pytest
from django.conf import settings

from routing.models import RateLimitTier
from tests.routing.proxy.cache_upstream import cached_route, entry_keys, wait_for

pytestmark = pytest.mark.django_db

APP = "https://app.example.com"
OTHER_APP = "https://admin.example.com"


def bearer(user_id: int) -> dict[str, str]:
    claims = {
        "user_id": user_id,
        "email": f"u{user_id}@example.com",
        "roles": ["reader"],
        "token_type": "access",
        "exp": int(time.time()) + 300,
    }
    raw = jwt.encode(claims, settings.PORTIER_JWT_SIGNING_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {raw}"}


@pytest.mark.parametrize(
    "header",
    [
        ("Cache-Control", "no-store"),
        ("Cache-Control", "private"),
        ("Cache-Control", "no-cache"),
        ("Cache-Control", "max-age=0"),
        ("Cache-Control", "public, s-maxage=0, max-age=60"),
        ("Set-Cookie", "session=abc; HttpOnly"),
        ("Expires", "0"),
    ],
)
def test_an_answer_the_upstream_forbids_keeping_is_never_stored(client, cache_upstream, header):
    cached_route(cache_upstream, "/n")
    cache_upstream.app.headers["/n/x"] = [header]
    answers = []
    for _ in range(3):
        answers.append(client.get("/n/x"))
        client.cookies.clear()  # a cookie sent back would make the request BYPASS
    assert [a.headers["x-cache"] for a in answers] == ["MISS"] * 3
    assert [a.json()["call"] for a in answers] == [1, 2, 3]
    assert all(a.headers[header[0]] == header[1] for a in answers)  # passed on as sent
    assert entry_keys() == []


@pytest.mark.parametrize("status", [500, 502, 503, 201, 206])
def test_an_answer_with_an_uncacheable_status_is_never_stored(client, cache_upstream, status):
    cached_route(cache_upstream, "/s")
    cache_upstream.app.status["/s/x"] = status
    answers = [client.get("/s/x") for _ in range(2)]
    assert [a.status_code for a in answers] == [status, status]
    assert [a.json()["call"] for a in answers] == [1, 2]
    assert entry_keys() == []


@pytest.mark.parametrize("chunked", [False, True], ids=["with-length", "streamed"])
def test_an_answer_above_max_entry_bytes_reaches_the_client_whole_and_is_not_kept(
    client, cache_upstream, chunked
):
    cached_route(cache_upstream, "/big", max_entry_bytes=1000)
    body = b"".join(b"%05d," % i for i in range(2000))  # 12 000 bytes
    cache_upstream.app.body["/big/x"] = body
    if chunked:
        cache_upstream.app.chunked.add("/big/x")
    answers = [client.get("/big/x") for _ in range(2)]
    assert [a.content for a in answers] == [body, body]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "MISS"]
    assert cache_upstream.app.calls["/big/x"] == 2
    assert entry_keys() == []
    # A conditional request for it is answered whole too (it could not be read into an entry).
    conditional = client.get("/big/x", headers={"If-None-Match": '"nope"'})
    assert conditional.content == body


def test_an_answer_within_max_entry_bytes_is_kept_even_streamed(client, cache_upstream):
    cached_route(cache_upstream, "/fits", max_entry_bytes=1000)
    cache_upstream.app.chunked.add("/fits/x")
    first = client.get("/fits/x")
    assert client.get("/fits/x").content == first.content
    assert cache_upstream.app.calls["/fits/x"] == 1


@pytest.mark.parametrize("cache_control", ["max-age=1", "s-maxage=1, max-age=600"])
def test_the_upstreams_max_age_shortens_the_ttl(client, cache_upstream, cache_control):
    cached_route(cache_upstream, "/ma", ttl=600)
    cache_upstream.app.headers["/ma/x"] = [("Cache-Control", cache_control)]
    first = client.get("/ma/x")
    assert first.json()["call"] == 1
    # Fetched again once a second has passed, long before the route's ten minutes.
    refetched = wait_for(lambda: client.get("/ma/x").json()["call"] == 2, seconds=10)
    assert refetched
    assert cache_upstream.app.calls["/ma/x"] == 2


def test_a_future_expires_shortens_the_ttl(client, cache_upstream):
    cached_route(cache_upstream, "/ex", ttl=600)
    expires = formatdate(time.time() + 4, usegmt=True)
    cache_upstream.app.headers["/ex/x"] = [("Expires", expires)]
    answers = [client.get("/ex/x") for _ in range(2)]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT"]
    assert answers[1].headers["expires"] == expires
    # Fetched again once that date has passed, long before the route's ten minutes.
    assert wait_for(lambda: client.get("/ex/x").json()["call"] == 2, seconds=10)


def test_max_age_wins_over_expires(client, cache_upstream):
    cached_route(cache_upstream, "/mx", ttl=600)
    cache_upstream.app.headers["/mx/x"] = [
        ("Cache-Control", "max-age=60"),
        ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),  # long past: ignored under max-age
    ]
    answers = [client.get("/mx/x") for _ in range(2)]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT"]
    assert cache_upstream.app.calls["/mx/x"] == 1


def test_an_authenticated_request_bypasses_a_shared_route_and_is_marked_private(
    client, cache_upstream
):
    cached_route(cache_upstream, "/signed")
    anonymous = client.get("/signed/x")
    signed_in = client.get("/signed/x", headers=bearer(7))
    assert signed_in.headers["x-cache"] == "BYPASS"
    assert signed_in.headers["cache-control"] == "private"
    assert signed_in.json()["user"] == "7"  # from the upstream, not the anonymous entry
    # Nor was the authenticated answer stored for the next anonymous caller.
    again = client.get("/signed/x")
    assert again.headers["x-cache"] == "HIT"
    assert again.json() == anonymous.json()
    assert again.json()["user"] == ""
    assert "cache-control" not in again.headers


def test_an_api_key_or_a_cookie_also_bypasses(client, cache_upstream):
    cached_route(cache_upstream, "/cred")
    client.get("/cred/x")
    with_cookie = client.get("/cred/x", headers={"Cookie": "session=1"})
    assert with_cookie.headers["x-cache"] == "BYPASS"
    assert with_cookie.headers["cache-control"] == "private"
    assert with_cookie.json()["call"] == 2


def test_per_user_gives_each_caller_an_entry_of_their_own(client, cache_upstream):
    cached_route(cache_upstream, "/me", per_user=True)
    ana = client.get("/me/x", headers=bearer(7))
    bob = client.get("/me/x", headers=bearer(8))
    anonymous = client.get("/me/x")
    ana_again = client.get("/me/x", headers=bearer(7))
    bob_again = client.get("/me/x", headers=bearer(8))
    anonymous_again = client.get("/me/x")
    assert [r.json()["user"] for r in (ana, bob, anonymous)] == ["7", "8", ""]
    assert [r.headers["x-cache"] for r in (ana_again, bob_again, anonymous_again)] == ["HIT"] * 3
    assert ana_again.json() == ana.json()
    assert bob_again.json() == bob.json()
    assert anonymous_again.json() == anonymous.json()
    assert ana_again.headers["cache-control"] == "private"
    assert bob_again.headers["cache-control"] == "private"
    assert "cache-control" not in anonymous_again.headers
    assert cache_upstream.app.calls["/me/x"] == 3


@pytest.mark.parametrize(
    ("per_user", "cache_control", "results"),
    [
        (True, "public, max-age=30", ["MISS", "HIT"]),
        (True, "private, max-age=5", ["MISS", "MISS"]),  # a shared cache never keeps it
        (False, "public, max-age=30", ["BYPASS", "BYPASS"]),
    ],
)
def test_an_authenticated_answer_keeps_the_upstreams_own_cache_control(
    client, cache_upstream, per_user, cache_control, results
):
    cached_route(cache_upstream, "/own", per_user=per_user)
    cache_upstream.app.headers["/own/x"] = [("Cache-Control", cache_control)]
    answers = [client.get("/own/x", headers=bearer(7)) for _ in range(2)]
    assert [a.headers["x-cache"] for a in answers] == results
    assert [a.headers.get_list("cache-control") for a in answers] == [[cache_control]] * 2
    assert [a.json()["user"] for a in answers] == ["7", "7"]


def test_a_bad_token_on_a_per_user_route_never_reads_an_entry(client, cache_upstream):
    cached_route(cache_upstream, "/bad", per_user=True)
    client.get("/bad/x", headers=bearer(7))
    forged = client.get("/bad/x", headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code == 401
    assert "x-cache" not in forged.headers


def test_per_request_headers_are_written_afresh_on_a_hit(client, cache_upstream):
    tier = RateLimitTier.objects.create(name="cache-tier", rate="100/h", key="route")
    route = cached_route(cache_upstream, "/fresh", publish_now=False)
    route.rate_limit_tier = tier
    route.cors = {"origins": [APP, OTHER_APP]}
    route.save()
    from tests.conftest import publish

    publish()
    first = client.get("/fresh/x", headers={"X-Request-ID": "req-one", "Origin": APP})
    hit = client.get("/fresh/x", headers={"X-Request-ID": "req-two", "Origin": OTHER_APP})
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers["x-request-id"] == "req-two"
    assert first.headers["ratelimit-remaining"] == "99"
    assert hit.headers["ratelimit-remaining"] == "98"
    assert hit.headers["ratelimit-limit"] == "100"
    assert first.headers["access-control-allow-origin"] == APP
    assert hit.headers["access-control-allow-origin"] == OTHER_APP
    plain = client.get("/fresh/x")
    assert plain.headers["x-cache"] == "HIT"
    assert "access-control-allow-origin" not in plain.headers
    assert plain.headers["x-request-id"] not in ("req-one", "req-two")
    for answer in (first, hit, plain):  # each header once, not a stored copy beside a fresh one
        names = [name for name, _ in answer.headers.raw]
        assert names.count(b"x-request-id") == 1
        assert names.count(b"ratelimit-remaining") == 1


def test_the_age_an_upstream_cache_reports_counts_against_its_max_age(client, cache_upstream):
    cached_route(cache_upstream, "/aged", ttl=600)
    # An upstream cache already held this answer 599 of its 600 seconds.
    cache_upstream.app.headers["/aged/x"] = [("Cache-Control", "max-age=600"), ("Age", "599")]
    client.get("/aged/x")
    wait_for(lambda: client.get("/aged/x").json()["call"] == 2, seconds=10)
    cache_upstream.app.headers["/aged/y"] = [("Cache-Control", "max-age=600"), ("Age", "900")]
    answers = [client.get("/aged/y") for _ in range(2)]
    assert [a.json()["call"] for a in answers] == [1, 2]  # already stale: never stored
