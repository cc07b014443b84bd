"""Publishing the configuration, and a process holding on to it when the cache goes away."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.test import override_settings

from routing.config import publish
from routing.config.holder import BUILD_LOCK_KEY, SnapshotHolder
from routing.config.holder import holder as process_holder
from routing.config.publish import SNAPSHOT_KEY, VERSION_KEY, config_publish
from routing.models import ConfigVersion, Service, Target
from tests.conftest import make_route, make_service


@pytest.fixture(autouse=True)
def _process_holder_paused() -> Iterator[None]:
    """These tests run holders of their own under changed cache settings, which are the whole
    process's: this process's refresher (started by an earlier test's gateway) would act on them
    too (rebuild an empty key space, publish an owed change), so it is paused meanwhile."""
    was_running = process_holder.running
    process_holder.stop()
    yield
    if was_running:
        process_holder.start()


DEAD_CACHE = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
}


def version() -> int:
    row = ConfigVersion.objects.filter(pk=1).first()
    return row.number if row else 0


def published() -> dict[str, Any]:
    """The snapshot data the cache currently serves to every gateway process."""
    return json.loads(cache.get(SNAPSHOT_KEY.format(token=cache.get(VERSION_KEY))))


@pytest.mark.django_db
def test_it_bumps_the_version_and_stores_the_snapshot_in_the_cache():
    make_route(make_service("users", "http://127.0.0.1:9001"), "/users")
    before = version()

    token = config_publish()

    assert version() == before + 1
    assert cache.get(VERSION_KEY) == token
    data = published()
    assert data["version"] == before + 1
    assert data["token"] == token
    assert [r["path"] for r in data["routes"]] == ["/users"]


@pytest.mark.django_db
def test_it_publishes_a_new_token_each_time():
    assert config_publish() != config_publish()


@pytest.mark.django_db
def test_it_publishes_only_enabled_routes_of_enabled_services():
    live = make_service("live", "http://127.0.0.1:9001")
    off = make_service("off", "http://127.0.0.1:9002", enabled=False)
    make_route(live, "/on", name="on")
    make_route(live, "/disabled", name="disabled", enabled=False)
    make_route(off, "/service-off", name="service-off")

    config_publish()

    data = published()
    assert [r["name"] for r in data["routes"]] == ["on"]
    assert [s["name"] for s in data["services"]] == ["live"]


@pytest.mark.django_db
def test_it_leaves_disabled_targets_out():
    service = make_service("users", "http://127.0.0.1:9001", "http://127.0.0.1:9002")
    Target.objects.filter(url="http://127.0.0.1:9002").update(enabled=False)

    config_publish()

    [published_service] = published()["services"]
    assert published_service["targets"] == [{"url": "http://127.0.0.1:9001", "weight": 100}]
    assert published_service["id"] == service.pk


@pytest.mark.django_db(transaction=True)
def test_it_publishes_once_after_a_transaction_commits():
    before = version()

    with transaction.atomic():
        service = make_service("users", "http://127.0.0.1:9001", "http://127.0.0.1:9002")
        make_route(service, "/users")
        make_route(service, "/people")
        service.read_timeout = 3
        service.save()
        assert version() == before

    assert version() == before + 1
    assert sorted(r["path"] for r in published()["routes"]) == ["/people", "/users"]


@pytest.mark.django_db(transaction=True)
def test_it_publishes_once_per_save_outside_a_transaction():
    before = version()

    service = make_service("users")
    Target.objects.create(service=service, url="http://127.0.0.1:9001")

    assert version() == before + 2


@pytest.mark.django_db(transaction=True)
def test_it_publishes_nothing_for_a_rolled_back_transaction():
    make_route(make_service("kept", "http://127.0.0.1:9001"), "/kept")
    before, token = version(), cache.get(VERSION_KEY)

    with pytest.raises(RuntimeError), transaction.atomic():
        make_route(make_service("lost", "http://127.0.0.1:9002"), "/lost")
        raise RuntimeError("abandon the change")

    assert version() == before
    assert cache.get(VERSION_KEY) == token
    assert not Service.objects.filter(name="lost").exists()


@pytest.mark.django_db(transaction=True)
def test_it_publishes_the_outer_change_when_a_savepoint_rolls_back():
    before = version()

    with transaction.atomic():
        make_route(make_service("kept", "http://127.0.0.1:9001"), "/kept")
        with pytest.raises(RuntimeError), transaction.atomic():
            make_route(Service.objects.get(name="kept"), "/lost", name="lost")
            raise RuntimeError("abandon the inner change")

    assert version() == before + 1
    assert [r["path"] for r in published()["routes"]] == ["/kept"]


@pytest.mark.django_db(transaction=True)
def test_it_publishes_a_change_saved_after_a_rolled_back_savepoint():
    service = make_service("users", "http://127.0.0.1:9001")
    before = version()

    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():
            make_route(service, "/lost", name="lost")
            raise RuntimeError("abandon the inner change")
        make_route(service, "/kept", name="kept")

    assert version() == before + 1
    assert [r["path"] for r in published()["routes"]] == ["/kept"]


@pytest.mark.django_db
def test_a_holder_loads_the_published_snapshot():
    make_route(make_service("users", "http://127.0.0.1:9001"), "/users")
    token = config_publish()
    holder = SnapshotHolder()

    assert holder.refresh() is True
    assert holder.current.token == token
    assert [route.path for route in holder.current.routes] == ["/users"]
    assert holder.refresh() is False


@pytest.mark.django_db
def test_a_holder_keeps_its_last_good_snapshot_while_the_cache_is_unreachable():
    make_route(make_service("users", "http://127.0.0.1:9001"), "/users")
    config_publish()
    holder = SnapshotHolder()
    holder.refresh()
    good = holder.current

    with override_settings(CACHES=DEAD_CACHE):
        assert holder.refresh() is False

    assert holder.current is good
    assert holder.last_error is not None
    assert "Connection" in holder.last_error


@pytest.mark.django_db
def test_a_holder_recovers_once_the_cache_is_back():
    service = make_service("users", "http://127.0.0.1:9001")
    make_route(service, "/users")
    config_publish()
    holder = SnapshotHolder()
    holder.refresh()
    with override_settings(CACHES=DEAD_CACHE):
        holder.refresh()

    make_route(service, "/people")
    token = config_publish()

    assert holder.refresh() is True
    assert holder.last_error is None
    assert holder.current.token == token


@pytest.mark.django_db
def test_a_holder_rebuilds_the_snapshot_when_the_cache_lost_it():
    make_route(make_service("users", "http://127.0.0.1:9001"), "/users")
    lost = config_publish()
    cache.delete(SNAPSHOT_KEY.format(token=lost))
    holder = SnapshotHolder()

    assert holder.refresh() is True
    assert holder.current.token != lost
    assert [route.path for route in holder.current.routes] == ["/users"]


@pytest.fixture
def empty_key_space() -> Iterator[None]:
    """The shared Redis under a key prefix of this test's own: nothing published in it yet."""
    caches = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"t-{uuid.uuid4().hex}"}}
    with override_settings(CACHES=caches):
        try:
            yield
        finally:
            cache.delete_pattern("*")  # this prefix's keys only


@pytest.mark.django_db(transaction=True)
def test_one_process_rebuilds_a_missing_snapshot_and_every_other_one_loads_it(empty_key_space):
    make_route(make_service("users", "http://127.0.0.1:9001"), "/users")
    cache.delete_pattern("*")  # as a Redis restarted empty finds it
    before = version()
    holders = [SnapshotHolder() for _ in range(8)]
    start = threading.Barrier(len(holders))

    def poll(holder: SnapshotHolder) -> None:
        start.wait()
        try:
            deadline = time.monotonic() + 5
            while holder.current.token == "" and time.monotonic() < deadline:
                holder.refresh()  # as its poll would, every interval
                time.sleep(0.01)
        finally:
            connection.close()

    threads = [threading.Thread(target=poll, args=(h,)) for h in holders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert version() == before + 1  # one build, one version bump
    assert {h.current.token for h in holders} == {cache.get(VERSION_KEY)}
    assert all([r.path for r in h.current.routes] == ["/users"] for h in holders)
    assert cache.get(BUILD_LOCK_KEY) is None


@pytest.mark.django_db
def test_a_holder_leaves_the_rebuild_to_the_lock_holder_until_its_lock_lapses(empty_key_space):
    make_route(make_service("users", "http://127.0.0.1:9001"), "/users")
    cache.add(BUILD_LOCK_KEY, "a process that died while building", 1)
    holder = SnapshotHolder()
    before = version()

    assert holder.refresh() is False  # someone else is building: wait for the next poll
    assert version() == before
    time.sleep(1.1)

    assert holder.refresh() is True
    assert version() == before + 1
    assert holder.current.token == cache.get(VERSION_KEY)


@pytest.mark.django_db(transaction=True)
def test_a_starting_process_waits_for_the_build_under_way(empty_key_space, monkeypatch):
    make_route(make_service("users", "http://127.0.0.1:9001"), "/users")
    cache.delete_pattern("*")
    cache.add(BUILD_LOCK_KEY, "another process", 10)

    def other_process_builds() -> None:
        time.sleep(0.3)  # its build lands while this one starts
        config_publish()
        connection.close()

    threading.Thread(target=other_process_builds).start()
    holder = SnapshotHolder()
    monkeypatch.setattr(holder, "_run", lambda stop: None)  # no refresher thread

    holder.start()

    assert [route.path for route in holder.current.routes] == ["/users"]


@pytest.mark.django_db
def test_a_holder_with_nothing_loaded_serves_the_database_while_the_cache_is_unreachable():
    make_route(make_service("users", "http://127.0.0.1:9001"), "/users")
    holder = SnapshotHolder()

    with override_settings(CACHES=DEAD_CACHE):
        assert holder.refresh() is True

    assert [route.path for route in holder.current.routes] == ["/users"]
    assert holder.last_error is not None  # /health says degraded
    token = config_publish()
    assert holder.refresh() is True  # the published version replaces the local one
    assert holder.current.token == token
    assert holder.last_error is None


@pytest.mark.django_db(transaction=True)
def test_a_change_saved_while_the_cache_is_unreachable_is_published_once_it_answers():
    service = make_service("users", "http://127.0.0.1:9001")
    holder = SnapshotHolder()
    holder.refresh()
    token = holder.current.token

    with override_settings(CACHES=DEAD_CACHE):
        make_route(service, "/people")  # committed, and the save succeeds; its publish fails

    assert publish.publish_owed is True
    assert cache.get(VERSION_KEY) == token  # a Redis that kept its data still has the old one
    assert holder.refresh() is True
    assert sorted(route.path for route in holder.current.routes) == ["/people"]
    assert publish.publish_owed is False
