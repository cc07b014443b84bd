"""Purging a route's cache, or changing the route, starts its cache afresh on every gateway
process: seen through a second process that shares only Redis with this one (its configuration
comes from what this process publishes)."""

from __future__ import annotations

import httpx
import pytest
from django.core.cache import cache

from routing.cache_purge import purge_route_cache
from routing.config.holder import holder
from routing.config.publish import VERSION_KEY
from routing.models import Route
from tests.routing.proxy.cache_upstream import cached_route, entry_keys, wait_for
from tests.servers import gateway_processes

# Both processes are called as one gateway behind a balancer would be: by one Host (the key
# holds the Host, port included, since the upstream sees it as X-Forwarded-Host).
SAME_HOST = {"Host": "gateway.example"}


def call_number(http: httpx.Client, url: str) -> int | None:
    answer = http.get(url, headers=SAME_HOST)
    return answer.json()["call"] if answer.status_code == 200 else None


def serving_latest(http: httpx.Client, url: str) -> bool:
    """The gateway at `url` serves the configuration last published."""
    return http.get(url + "/health").json()["config"]["token"] == cache.get(VERSION_KEY)


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
