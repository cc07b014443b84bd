"""The deny-set when the cache or the database fails: it must not fail open.

- a change whose publish failed (Redis down at commit) is published again by the refresher once
  the cache answers, even if that Redis kept its old set;
- a process that starts while the cache is unreachable reads the set from the database, and runs
  with an empty one (and says so) only when neither answers;
- publishers are ordered by a lock only its owner releases, and a replaced version's data is left
  to expire rather than deleted under a reader that just read its token.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db.utils import OperationalError
from django.test import override_settings

from accounts import denylist
from accounts.denylist import (
    DATA_KEY,
    EMPTY,
    FROM_DATABASE,
    LOCK_KEY,
    OLD_DATA_TTL,
    VERSION_KEY,
    DenySetHolder,
    deny_set_publish,
)
from accounts.models import User
from accounts.services import user_sign_out_everywhere

# Publishing happens on commit: the test's changes must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

DEAD_CACHE = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
}


@pytest.fixture(autouse=True)
def own_key_space(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The shared Redis under a key prefix of this test's own (other tests publish deny-sets
    too), and no publish owed from an earlier test."""
    monkeypatch.setattr(denylist, "publish_owed", False)
    caches = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"t-{uuid.uuid4().hex}"}}
    with override_settings(CACHES=caches):
        try:
            yield
        finally:
            cache.delete_pattern("*")  # this prefix's keys only


def make_user(name: str) -> User:
    return User.objects.create_user(name, email=f"{name}@example.com", password="x")


def test_a_change_whose_publish_failed_is_published_once_the_cache_answers():
    ana = make_user("ana")
    holder = DenySetHolder()
    holder.load()
    published = cache.get(VERSION_KEY)
    assert published is not None
    assert holder.current.token == published

    with override_settings(CACHES=DEAD_CACHE):
        ana.is_active = False
        ana.save()  # committed; its publish fails (the robust on-commit logs it)

    assert cache.get(VERSION_KEY) == published  # a Redis that kept its data has the old set
    assert holder.refresh() is True
    assert str(ana.pk) in holder.current.inactive
    assert denylist.publish_owed is False
    assert cache.get(VERSION_KEY) == holder.current.token  # every other process loads it too


def test_an_owed_publish_stays_owed_while_the_cache_is_unreachable():
    ana = make_user("ana")
    holder = DenySetHolder()
    holder.load()

    with override_settings(CACHES=DEAD_CACHE):
        ana.is_active = False
        ana.save()
        assert holder.refresh() is False

    assert denylist.publish_owed is True
    assert holder.refresh() is True
    assert str(ana.pk) in holder.current.inactive


def test_a_process_started_while_the_cache_is_unreachable_reads_the_database():
    gone = make_user("gone")
    gone.is_active = False
    gone.save()
    signed_out = make_user("signed-out")
    user_sign_out_everywhere(user=signed_out)
    holder = DenySetHolder()

    with override_settings(CACHES=DEAD_CACHE):
        holder.load()

    assert holder.current is not EMPTY
    assert holder.current.token == FROM_DATABASE
    assert holder.current.refuses_key(str(gone.pk))
    assert holder.current.refuses_token(str(signed_out.pk), time.time() - 60)
    assert holder.last_error is not None  # the cache is still out of reach
    # The cache answers again: its start-up publish was owed, and the published set replaces
    # the database's copy.
    assert holder.refresh() is True
    assert holder.current.token not in (FROM_DATABASE, "")
    assert holder.current.token == cache.get(VERSION_KEY)
    assert holder.current.refuses_key(str(gone.pk))
    assert holder.last_error is None


def test_a_held_copy_is_kept_rather_than_read_again_from_the_database():
    holder = DenySetHolder()
    holder.load()
    held = holder.current

    with override_settings(CACHES=DEAD_CACHE):
        assert holder.refresh() is False

    assert holder.current is held


def test_with_neither_the_cache_nor_the_database_the_set_is_empty_and_said_once(
    monkeypatch, caplog
):
    def refused() -> None:
        raise OperationalError("connection failed: Connection refused")

    build = denylist.deny_set_build
    monkeypatch.setattr(denylist, "deny_set_build", refused)
    holder = DenySetHolder()

    with override_settings(CACHES=DEAD_CACHE), caplog.at_level(logging.INFO, "portier.denylist"):
        holder.load()
        holder.refresh()

    assert holder.current is EMPTY
    said = [r for r in caplog.records if r.levelno == logging.ERROR and "no deny-set" in r.message]
    assert len(said) == 1
    monkeypatch.setattr(denylist, "deny_set_build", build)  # the database answers again
    with override_settings(CACHES=DEAD_CACHE):
        assert holder.refresh() is True
    assert holder.current.token == FROM_DATABASE


def test_a_publisher_that_waited_out_the_lock_leaves_anothers_lock_alone(monkeypatch):
    monkeypatch.setattr(denylist, "LOCK_WAIT", 0.1)
    cache.set(LOCK_KEY, "another-publisher", 30)

    assert deny_set_publish() is True

    assert cache.get(LOCK_KEY) == "another-publisher"


def test_a_publisher_releases_its_own_lock():
    assert deny_set_publish() is True

    assert cache.get(LOCK_KEY) is None


def test_the_lock_is_waited_for_past_its_ttl():
    # A publisher that died holding it has let it go by the time a waiter gives up.
    assert denylist.LOCK_WAIT > denylist.LOCK_TTL


def test_a_replaced_version_is_left_to_expire_for_a_reader_that_just_read_its_token():
    deny_set_publish()
    old = cache.get(VERSION_KEY)
    holder = DenySetHolder()
    deny_set_publish()
    new = cache.get(VERSION_KEY)
    assert new != old

    # A process that read the old version key just before the switch still finds its data.
    assert cache.get(DATA_KEY.format(token=old)) is not None
    assert 0 < cache.ttl(DATA_KEY.format(token=old)) <= OLD_DATA_TTL
    assert cache.ttl(DATA_KEY.format(token=new)) is None  # the current set never expires
    assert holder.refresh() is True
    assert holder.current.token == new
