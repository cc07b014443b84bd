"""API keys when the cache or the database fails: a failing cache is a miss, a failing database
on a miss is ApiKeysUnavailable (503 at the gateway, never a 500), and recording last use never
waits for the database nor fails the request."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db.utils import OperationalError

from accounts import services
from accounts.models import ApiKey, User
from accounts.services import ApiKeysUnavailable, api_key_issue, api_key_lookup, api_key_touch

# The lookup runs on a worker thread with its own connection: the test data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

lookup = async_to_sync(api_key_lookup)


class DeadCache:
    """What django-redis does with Redis down: every call raises."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

        return fail


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "_database_failed_at", float("-inf"))
    monkeypatch.setattr(services, "_touch_failing", False)
    monkeypatch.setattr(services, "_local", {})
    monkeypatch.setattr(services, "_last_touched", {})


@pytest.fixture
def key() -> str:
    owner = User.objects.create_user("sync", email="sync@example.com", password="x")
    return api_key_issue(owner=owner, name="sync")[1]


def refuse_queries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, every API key query fails as a refused connection would; counts them."""
    attempts: list[int] = []

    def refused(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        raise OperationalError("connection failed: Connection refused")

    monkeypatch.setattr(ApiKey.objects, "select_related", refused)
    monkeypatch.setattr(ApiKey.objects, "filter", refused)
    return attempts


def test_a_failing_cache_counts_as_a_miss_and_the_database_answers(key, monkeypatch):
    monkeypatch.setattr(services, "cache", DeadCache())

    record = lookup(key)

    assert record is not None
    assert record.email == "sync@example.com"


def test_a_key_in_the_cache_is_honoured_while_the_database_is_down(key, monkeypatch):
    assert lookup(key) is not None  # now in the shared cache
    services._local.clear()
    attempts = refuse_queries(monkeypatch)

    assert lookup(key) is not None
    assert attempts == []


def test_a_database_failure_on_a_miss_is_keys_unavailable_and_fails_fast_after(key, monkeypatch):
    attempts = refuse_queries(monkeypatch)

    with pytest.raises(ApiKeysUnavailable):
        lookup(key)
    with pytest.raises(ApiKeysUnavailable):
        lookup(key.replace(key[4:12], "0badc0de"))  # another key, within the retry delay

    assert len(attempts) == 1  # the second did not wait for the database again


def test_recording_last_use_neither_waits_for_nor_fails_with_the_database(key, monkeypatch, caplog):
    release = threading.Event()

    def stuck_then_refused(*args: Any, **kwargs: Any) -> Any:
        release.wait(5)
        raise OperationalError("connection failed: Connection refused")

    monkeypatch.setattr(ApiKey.objects, "filter", stuck_then_refused)
    prefix = key[4:12]

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="portier.api_keys"):
        api_key_touch(prefix)
        api_key_touch("0badc0de")
        returned = time.monotonic() - started
        release.set()
        services._touch_pool.submit(lambda: None).result(timeout=5)  # the queue has drained

    assert returned < 0.1
    assert [r.getMessage() for r in caplog.records] == [
        "API keys' last use cannot be recorded: OperationalError"
    ]  # once per outage, not once per key
