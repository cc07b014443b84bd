"""Purging a route's cache, changing the route, or changing what its service answers with starts
its cache afresh on every gateway process: seen through a second process that shares only Redis
with this one (its configuration comes from what this process publishes). A change that cannot
change the answer keeps the entries."""

from __future__ import annotations

import httpx
import pytest
from django.core.cache import cache

from routing.cache_purge import purge_route_cache
from routing.config.holder import holder
from routing.models import Route, Target
from tests.conftest import make_route, publish
from tests.routing.proxy.cache_upstream import (
    SAME_HOST,
    CacheUpstream,
    cached_route,
    entry_keys,
    serving_latest,
    wait_for,
)
from tests.servers import ServerThread, gateway_processes


def call_number(http: httpx.Client, url: str) -> int | None:
    answer = http.get(url, headers=SAME_HOST)
    return answer.json()["call"] if answer.status_code == 200 else None


@pytest.mark.django_db(transaction=True)
def test_a_purge_and_a_route_change_make_the_next_request_a_miss_on_every_process(
    client, cache_upstream
):
    route = cached_route(cache_upstream, "/purged")
    with gateway_processes(1) as (other,), httpx.Client(timeout=10) as http:
        here = client.get("/purged/x", headers=SAME_HOST)
        assert here.headers["x-cache"] == "MISS"
        # The other process serves the route from the entry this one stored.
        wait_for(lambda: call_number(http, other + "/purged/x") == 1)
        there = http.get(other + "/purged/x", headers=SAME_HOST)
        assert there.headers["x-cache"] == "HIT"
        assert there.content == here.content
        stored = entry_keys()
        assert stored

        purge_route_cache(route)  # publishes on commit: nothing else is done here

        assert not set(stored) & set(entry_keys())  # the old entries are gone from Redis
        wait_for(lambda: serving_latest(http, other))
        holder.refresh()  # this process loads it too (its own poll would, a little later)
        miss = http.get(other + "/purged/x", headers=SAME_HOST)
        assert miss.headers["x-cache"] == "MISS"
        assert miss.json()["call"] == 2
        wait_for(entry_keys)  # stored just after the answer was sent
        hit = client.get("/purged/x", headers=SAME_HOST)
        assert hit.headers["x-cache"] == "HIT"
        assert hit.content == miss.content

        before = set(entry_keys())
        changed = Route.objects.get(pk=route.pk)
        changed.cache = {"ttl": 120}
        changed.save()  # publishes on commit

        wait_for(lambda: serving_latest(http, other))
        holder.refresh()
        miss = client.get("/purged/x", headers=SAME_HOST)
        assert miss.headers["x-cache"] == "MISS"
        assert miss.json()["call"] == 3
        wait_for(lambda: set(entry_keys()) - before)
        hit = http.get(other + "/purged/x", headers=SAME_HOST)
        assert hit.headers["x-cache"] == "HIT"
        assert hit.content == miss.content
        assert cache_upstream.app.calls["/purged/x"] == 3


@pytest.mark.django_db(transaction=True)
def test_a_purge_leaves_other_routes_entries_alone(client, cache_upstream):
    kept = cached_route(cache_upstream, "/kept")
    purged = cached_route(cache_upstream, "/gone")
    client.get("/kept/x")
    client.get("/gone/x")
    prefix = cache.make_key(f"rc:{kept.pk}:").encode()
    kept_keys = [k for k in entry_keys() if k.startswith(prefix)]
    assert kept_keys

    purge_route_cache(purged)

    assert [k for k in entry_keys() if k.startswith(prefix)] == kept_keys
    wait_for(lambda: client.get("/gone/x").json()["call"] == 2)
    hit = client.get("/kept/x")
    assert hit.headers["x-cache"] == "HIT"
    assert hit.json()["call"] == 1


@pytest.mark.django_db
def test_moving_the_routes_service_to_other_targets_makes_the_next_request_a_miss(
    client, cache_upstream
):
    route = cached_route(cache_upstream, "/moved")
    cached = [client.get("/moved/x") for _ in range(2)]
    assert [a.headers["x-cache"] for a in cached] == ["MISS", "HIT"]
    second = ServerThread(CacheUpstream()).start()
    try:
        second.app.body["/moved/x"] = b'{"from": "the second upstream"}'
        target = Target.objects.get(service=route.service)
        target.url = second.url
        target.save()
        publish()

        moved = client.get("/moved/x")
        assert moved.headers["x-cache"] == "MISS"
        assert moved.json() == {"from": "the second upstream"}
        wait_for(lambda: client.get("/moved/x").headers["x-cache"] == "HIT")

        # The same upstream under a base path answers from elsewhere too.
        target.url = second.url + "/v2"
        target.save()
        publish()

        rebased = client.get("/moved/x")
        assert rebased.headers["x-cache"] == "MISS"
        assert rebased.json()["path"] == "/v2/moved/x"
        assert second.app.calls == {"/moved/x": 1, "/v2/moved/x": 1}
        assert cache_upstream.app.calls["/moved/x"] == 1
    finally:
        second.stop()


@pytest.mark.django_db
def test_changes_that_cannot_change_the_answer_keep_the_routes_entries(client, cache_upstream):
    route = cached_route(cache_upstream, "/steady")
    first = client.get("/steady/x")
    assert first.headers["x-cache"] == "MISS"

    # Another route on the same service, and the service's timeouts, retries and passive health
    # checks tuned (as during an incident, when a stale answer may be wanted most).
    make_route(route.service, "/elsewhere", name="steady-elsewhere")
    service = route.service
    service.description = "tuned"
    service.connect_timeout = 2.0
    service.read_timeout = 12.0
    service.retries = 2
    service.breaker_failures = 9
    service.save()
    token = holder.current.token
    publish()
    assert holder.current.token != token  # a new configuration is served

    again = client.get("/steady/x")
    assert again.headers["x-cache"] == "HIT"
    assert again.content == first.content
    assert cache_upstream.app.calls["/steady/x"] == 1
