"""The gateway on the Redis topologies production runs, set only by settings: a single server
spoken to over TLS, a three-master Redis Cluster (keys spread over every master's slots) and a
master watched by Sentinel, failed over while traffic flows."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings

from gateway_site.settings.framework import redis_cache_options
from routing.config.holder import holder
from routing.config.publish import VERSION_KEY, config_publish
from routing.models import RateLimitTier
from routing.observe import traffic_stats
from routing.proxy.cache_store import close_cache_clients, store_get, store_set
from tests.conftest import make_route, make_service, received
from tests.faults.conftest import shared_database_url
from tests.faults.redis_topologies import MASTER_NAME, RedisCluster, SentinelSetup, TlsRedis
from tests.faults.test_redis_outage import Traffic, register_as_registrar, wait_for
from tests.servers import ServerThread, gateway_processes, import_settings

pytestmark = pytest.mark.django_db(transaction=True)

# Requests on a rate-limited route answered without counting while Sentinel promotes the replica
# (PORTIER_RATELIMIT_FAIL=open): at most this long (README: the fail-open window).
FAILOVER_WINDOW = 5.0


@contextmanager
def redis_at(url: str, topology: str, sentinels: list[tuple[str, int]] = ()) -> Iterator[None]:
    """This test process's cache on the test's own Redis topology, as the settings build it."""
    options = redis_cache_options(topology, list(sentinels))
    caches = {"default": {**settings.CACHES["default"], "LOCATION": [url], "OPTIONS": options}}
    with override_settings(
        CACHES=caches,
        REDIS_URL=url,
        PORTIER_REDIS_TOPOLOGY=topology,
        PORTIER_REDIS_SENTINELS=list(sentinels),
    ):
        yield


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PORTIER_REDIS_SENTINEL_MASTER": "mymaster"}, "need PORTIER_REDIS_SENTINELS"),
        ({"PORTIER_REDIS_SENTINELS": "sentinel-1"}, "is not host:port"),
        # A port means a server, not a master's name: the sentinels give its address.
        ({"PORTIER_REDIS_SENTINELS": "s:26379", "REDIS_URL": "redis://redis:6379/0"}, "no port"),
        ({"PORTIER_REDIS_SENTINELS": "s:26379", "REDIS_URL": "rediss://mymaster/0"}, "TLS"),
        ({"PORTIER_REDIS_SENTINELS": "s:26379", "PORTIER_REDIS_SENTINEL_MASTER": "Main"}, "lower"),
        (
            {
                "PORTIER_REDIS_SENTINELS": "s:26379",
                "PORTIER_REDIS_SENTINEL_MASTER": "a",
                "REDIS_URL": "redis://b/0",
            },
            "master's name",
        ),
        ({"PORTIER_REDIS_CLUSTER": "true"}, "needs REDIS_URL"),
        ({"PORTIER_REDIS_CLUSTER": "true", "REDIS_URL": "redis://node:7000/2"}, "database 0"),
        ({"PORTIER_REDIS_CLUSTER": "true", "PORTIER_REDIS_SENTINELS": "s:26379"}, "not both"),
    ],
)
def test_a_redis_topology_that_cannot_work_stops_the_gateway_from_starting(
    env: dict[str, str], says: str
) -> None:
    environment = {k: v for k, v in os.environ.items() if "REDIS" not in k}
    result = import_settings({**environment, **env})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert says in result.stderr


def serves(http: httpx.Client, url: str, token: str) -> bool:
    return http.get(url + "/health").json()["config"]["token"] == token


def test_a_gateway_on_a_redis_that_speaks_only_tls(
    redis_over_tls: TlsRedis, upstream: ServerThread, tmp_path: Path
) -> None:
    hourly = RateLimitTier.objects.create(name="three-an-hour", rate="3/h", key="route")
    service = make_service("tls", upstream.url)
    make_route(service, "/limited", name="limited", rate_limit_tier=hourly)
    with redis_at(redis_over_tls.url, "single"):
        token = config_publish()
    plain = redis.Redis(port=redis_over_tls.port, socket_timeout=1)
    with pytest.raises(redis.ConnectionError):
        plain.ping()  # the server really refuses a connection without TLS
    env = {"REDIS_URL": redis_over_tls.url, "DATABASE_URL": shared_database_url(tmp_path)}

    with gateway_processes(1, **env) as [url], httpx.Client(timeout=5) as http:
        wait_for(lambda: serves(http, url, token), 10, "the configuration")
        statuses = [http.get(url + "/limited/x").status_code for _ in range(5)]
        assert http.get(url + "/health").json()["checks"]["cache"] == "ok"

    assert statuses == [200, 200, 200, 429, 429]


def test_two_gateways_share_a_redis_cluster(
    redis_cluster: RedisCluster, upstream: ServerThread, tmp_path: Path
) -> None:
    hourly = RateLimitTier.objects.create(name="ten-an-hour", rate="10/h", key="route")
    generous = RateLimitTier.objects.create(name="generous", rate="100000/h", key="route")
    service = make_service("clustered", upstream.url)
    make_route(service, "/limited", name="limited", rate_limit_tier=hourly)
    make_route(service, "/generous", name="generous", rate_limit_tier=generous)
    make_route(service, "/cached", name="cached", cache={"ttl": 60})
    with redis_at(redis_cluster.url, "cluster"):
        token = config_publish()
    env = {
        "REDIS_URL": redis_cluster.url,
        "PORTIER_REDIS_CLUSTER": "true",
        "PORTIER_RATELIMIT_REDIS_URL": redis_cluster.url,
        "DATABASE_URL": shared_database_url(tmp_path),
        "PORTIER_HEALTH_SYNC_INTERVAL": "0.2",
    }

    with gateway_processes(2, **env) as urls, httpx.Client(timeout=5) as http:
        wait_for(lambda: all(serves(http, u, token) for u in urls), 10, "the configuration")
        assert [http.get(u + "/health").json()["checks"]["cache"] for u in urls] == ["ok", "ok"]

        # One count across both processes: exactly ten of twenty requests pass.
        limited = [http.get(urls[i % 2] + "/limited/x") for i in range(20)]
        statuses = [r.status_code for r in limited]
        assert statuses == [200] * 10 + [429] * 10, statuses
        assert limited[9].headers["ratelimit-remaining"] == "0"

        # One answer cached for both processes (the Host is part of the key: a balancer in
        # front sends both the same).
        same_host = {"Host": "api.example.com"}
        here = http.get(urls[0] + "/cached/a", headers=same_host)
        with redis_at(redis_cluster.url, "cluster"):  # stored once the answer has been sent
            wait_for(lambda: list(cache.iter_keys("rc:*")), 10, "the entry to be stored")
        there = http.get(urls[1] + "/cached/a", headers=same_host)
        assert (here.headers["x-cache"], there.headers["x-cache"]) == ("MISS", "HIT")
        assert there.content == here.content
        assert [s["path"] for s in received(upstream)].count("/cached/a") == 1

        # A change published by the admin's process reaches both.
        make_route(service, "/added", name="added")
        with redis_at(redis_cluster.url, "cluster"):
            changed = config_publish()
        wait_for(lambda: all(serves(http, u, changed) for u in urls), 10, "the change")
        assert [http.get(u + "/added/x").status_code for u in urls] == [200, 200]

        # The traffic counts, written in one MULTI/EXEC per flush, are read back by the admin.
        def counted() -> int:
            with redis_at(redis_cluster.url, "cluster"):
                rows = traffic_stats.summary().routes
            return sum(r.requests for r in rows if r.route == "limited")

        wait_for(lambda: counted() == 20, 10, "the traffic counts")

        # The master that holds a route's count stops answering (SIGSTOP): no request waits on
        # it beyond the rate limiter's timeout, and the limit fails open (the default).
        before = redis_cluster.keys_per_node()
        assert http.get(urls[0] + "/generous/x").headers["ratelimit-remaining"] == "99999"
        grown = [
            n
            for n, (a, b) in enumerate(zip(before, redis_cluster.keys_per_node(), strict=True))
            if b > a
        ]
        owner = redis_cluster.nodes[grown[0]]
        owner.pause()
        try:
            answers = []
            for i in range(20):
                started = time.monotonic()
                status = http.get(urls[i % 2] + "/generous/x").status_code
                answers.append((status, time.monotonic() - started))
        finally:
            owner.resume()
        assert [status for status, _ in answers] == [200] * 20
        assert max(seconds for _, seconds in answers) < 1.0, answers

    # The test meant a cluster: the gateway's keys landed on every master.
    assert all(count > 0 for count in redis_cluster.keys_per_node()), redis_cluster.keys_per_node()


def test_gateways_ride_out_a_sentinel_failover_and_use_the_new_master(
    redis_sentinel: SentinelSetup, upstream: ServerThread, tmp_path: Path
) -> None:
    generous = RateLimitTier.objects.create(name="generous", rate="100000/h", key="route")
    hourly = RateLimitTier.objects.create(name="ten-an-hour", rate="10/h", key="route")
    service = make_service("failover", upstream.url)
    make_route(service, "/plain", name="plain")
    make_route(service, "/limited", name="limited", rate_limit_tier=generous)
    make_route(service, "/ten", name="ten", rate_limit_tier=hourly)
    url = f"redis://{MASTER_NAME}/0"
    sentinels = [("127.0.0.1", redis_sentinel.sentinel.port)]
    with redis_at(url, "sentinel", sentinels):
        token = config_publish()
    env = {
        "REDIS_URL": url,
        "PORTIER_REDIS_SENTINELS": redis_sentinel.sentinels,
        "DATABASE_URL": shared_database_url(tmp_path),
        "PORTIER_RATELIMIT_FAIL": "open",
    }

    with gateway_processes(2, **env) as urls, httpx.Client(timeout=5) as http:
        wait_for(lambda: all(serves(http, u, token) for u in urls), 10, "the configuration")
        statuses = [http.get(urls[i % 2] + "/ten/x").status_code for i in range(20)]
        assert statuses == [200] * 10 + [429] * 10, statuses  # one count across both
        with Traffic(urls, ["/plain", "/limited"]) as traffic:
            time.sleep(0.5)
            traffic.phase = "failover"
            started = time.monotonic()
            redis_sentinel.failover()
            promoted = time.monotonic() - started

            def counting_again() -> bool:
                return all("ratelimit-limit" in http.get(u + "/limited").headers for u in urls)

            wait_for(counting_again, 10, "counting on the new master")
            traffic.phase = "after"
            time.sleep(1.0)

        # The admin's process publishes to the new master; both gateways follow.
        make_route(service, "/added", name="added")
        with redis_at(url, "sentinel", sentinels):
            changed = config_publish()
            assert cache.get(VERSION_KEY) == changed
        wait_for(lambda: all(serves(http, u, changed) for u in urls), 10, "the change")
        assert [http.get(u + "/added/x").status_code for u in urls] == [200, 200]
        assert [http.get(u + "/health").json()["status"] for u in urls] == ["ok", "ok"]

    failed = [h for h in traffic.hits if h.status != 200]
    uncounted = [h for h in traffic.of("failover", "/limited") if not h.counted]
    window = max((h.finished for h in uncounted), default=0) - min(
        (h.finished - h.seconds for h in uncounted), default=0
    )
    print(
        f"\n{len(traffic.hits)} requests, {len(failed)} failed; promoted in {promoted:.2f} s; "
        f"{len(uncounted)} uncounted over {window:.2f} s"
    )
    assert not failed, failed[:5]
    assert traffic.of("after", "/limited")
    assert all(h.counted for h in traffic.of("after", "/limited"))
    assert window < FAILOVER_WINDOW
    # The new master holds the counts now: the old one is its replica.
    assert redis_sentinel.master_port() == redis_sentinel.replica.port


def test_the_registry_answers_503_when_the_cluster_is_down(redis_cluster: RedisCluster) -> None:
    """A Cluster that lost a master refuses every key (CLUSTERDOWN), an error redis-py does not
    count as a connection error: the registry still says it is unavailable, never 500."""

    def register() -> Any:
        return register_as_registrar("enrolling", "e-1")

    with redis_at(redis_cluster.url, "cluster"):
        make_service("enrolling", "http://127.0.0.1:9", allow_registration=True)
        config_publish()
        holder.refresh()
        registered = register()
        redis_cluster.nodes[1].kill()
        node = redis.Redis(port=redis_cluster.nodes[0].port, socket_timeout=1)
        wait_for(lambda: node.cluster("INFO")["cluster_state"] == "fail", 10, "CLUSTERDOWN")
        node.close()
        refused = [register() for _ in range(3)]

    assert registered.status_code == 201
    assert [r.status_code for r in refused] == [503, 503, 503]
    assert refused[0].json()["error"]["code"] == "registry_unavailable"


def test_the_shutdown_closes_a_cluster_clients_connections(redis_cluster: RedisCluster) -> None:
    """The response cache's client on a Cluster is closed by the shutdown step that closes it
    on one server (a Cluster client has no single connection pool to look into)."""

    async def store_then_close() -> bytes | None:
        await store_set("probe", b"kept", 60)
        stored = await store_get("probe")
        await close_cache_clients()
        return stored

    with redis_at(redis_cluster.url, "cluster"):
        assert asyncio.run(store_then_close()) == b"kept"


def test_the_cache_reaches_a_promoted_replica_after_its_cluster_master_dies(
    redis_cluster_with_replicas: RedisCluster,
) -> None:
    """The cache's lookups and the rate-limit counts go to Redis in pipelines, which (unlike
    single commands) do not reload the Cluster's map of the slots on their own after a node
    fails: they must, or once a replica takes over they ask the dead master for ever."""
    cluster = redis_cluster_with_replicas

    async def failover() -> tuple[bytes | None, bytes | None, float]:
        await store_set("probe", b"kept", 600)
        before = await store_get("probe")
        master = cluster.master_of(cache.make_key("probe"))
        with redis.Redis(port=master.port, socket_timeout=10) as node:
            node.execute_command("WAIT", 1, 5000)  # its replica holds the entry too
        master.kill()
        started = time.monotonic()
        after = None
        while after is None and time.monotonic() - started < 30:
            await asyncio.sleep(0.2)
            after = await store_get("probe")  # lookups only: a set would reload the map itself
        await close_cache_clients()
        return before, after, time.monotonic() - started

    with redis_at(cluster.url, "cluster"):
        before, after, took = asyncio.run(failover())

    assert before == b"kept"
    assert after == b"kept", f"the entry was still unreachable {took:.0f} s after the failover"
