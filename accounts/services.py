"""API key actions (issue, revoke) and the cached lookup the identity stage uses.

Lookup path, fastest first: this process's copy (kept PORTIER_API_KEY_LOCAL_TTL seconds), the
shared cache (Redis), the database (only on a miss, off the event loop). Saving or revoking a key
deletes its shared entry, so every instance sees the change within the local TTL.

Outages: a cache that fails counts as a miss (the database still knows every key); a database that
fails on a miss raises ApiKeysUnavailable, which the gateway answers with 503, never a 500. Keys
already in the cache keep working while the database is down. Recording a key's last use is
best-effort and never waits for, or fails, the request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone

from accounts.models import ApiKey, User

__all__ = [
    "ApiKeyRecord",
    "ApiKeysUnavailable",
    "api_key_forget",
    "api_key_issue",
    "api_key_lookup",
    "api_key_revoke",
    "api_key_touch",
    "hash_key",
    "parse_key",
    "user_sign_out_everywhere",
]

KEY_PREFIX = "ptr_"
CACHE_KEY = "apikey:{prefix}"
POSITIVE_TTL = 300
NEGATIVE_TTL = 30
LAST_USED_EVERY = 60.0
# After a database failure, lookups that miss the cache fail at once for this long instead of
# each holding a thread for the connect timeout.
DATABASE_RETRY_AFTER = 1.0
# Touches waiting for a stuck database, at most; past it they are dropped (last use is a hint).
TOUCH_BACKLOG = 1000

logger = logging.getLogger("portier.api_keys")


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """What the gateway needs to know about a key, without the database."""

    prefix: str
    hashed_key: str
    owner_id: int
    username: str
    email: str
    roles: tuple[str, ...]
    expires_at: float | None
    revoked: bool


class ApiKeysUnavailable(Exception):
    """Neither the cache nor the database can say whether a key is valid right now."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key(key: str) -> str | None:
    """The public prefix of a well-formed key (ptr_<prefix>.<secret>), else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    prefix, dot, secret = key[len(KEY_PREFIX) :].partition(".")
    if not dot or len(prefix) != 8 or len(secret) < 32:
        return None
    return prefix


def api_key_issue(
    *, owner: User, name: str, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key and return it with its full secret, which is never available again."""
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}{prefix}.{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        owner=owner, name=name, prefix=prefix, hashed_key=hash_key(key), expires_at=expires_at
    )
    return api_key, key


def api_key_revoke(*, api_key: ApiKey) -> None:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])


def user_sign_out_everywhere(*, user: User) -> None:
    """End every token the user holds: access tokens issued until now are refused by every
    gateway (the deny-set, accounts.denylist) and refresh tokens are blacklisted, so none can
    mint a new one. API keys are separate credentials: revoke them, or deactivate the user."""
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

    with transaction.atomic():
        user.tokens_valid_after = timezone.now()
        user.save(update_fields=["tokens_valid_after"])
        outstanding = OutstandingToken.objects.filter(user=user, blacklistedtoken__isnull=True)
        BlacklistedToken.objects.bulk_create(
            [BlacklistedToken(token=token) for token in outstanding], ignore_conflicts=True
        )


def api_key_forget(prefix: str) -> None:
    """Drop the shared cache entry of a key (called on every change to it or its owner)."""
    cache.delete(CACHE_KEY.format(prefix=prefix))


_local: dict[str, tuple[float, ApiKeyRecord | None]] = {}
_last_touched: dict[str, float] = {}


async def api_key_lookup(key: str) -> ApiKeyRecord | None:
    """The record of a presented key when its secret matches, else None (unknown or wrong).

    ApiKeysUnavailable when the key is in neither the cache nor a reachable database."""
    prefix = parse_key(key)
    if prefix is None:
        return None
    now = time.monotonic()
    local = _local.get(prefix)
    if local is not None and now - local[0] < settings.PORTIER_API_KEY_LOCAL_TTL:
        record = local[1]
    else:
        record = await sync_to_async(_shared_lookup, thread_sensitive=False)(prefix)
        if len(_local) > 10_000:
            _local.clear()
        _local[prefix] = (now, record)
    if record is None or not hmac.compare_digest(record.hashed_key, hash_key(key)):
        return None
    return record


def _shared_lookup(prefix: str) -> ApiKeyRecord | None:
    cache_key = CACHE_KEY.format(prefix=prefix)
    try:
        cached = cache.get(cache_key)
    except Exception as exc:  # Redis down or slow: a miss, the database still knows the key
        logger.debug("API key cache unreachable, asking the database: %s", exc)
        cache_up = False
    else:
        if cached is not None:
            return ApiKeyRecord(**cached) if cached else None
        cache_up = True
    record = _database_lookup(prefix)
    if cache_up:
        try:
            if record is None:
                cache.set(cache_key, {}, NEGATIVE_TTL)
            else:
                cache.set(cache_key, _as_dict(record), POSITIVE_TTL)
        except Exception as exc:
            logger.debug("API key %s not cached: %s", prefix, exc)
    return record


_database_failed_at = float("-inf")


def _database_lookup(prefix: str) -> ApiKeyRecord | None:
    global _database_failed_at
    if time.monotonic() - _database_failed_at < DATABASE_RETRY_AFTER:
        raise ApiKeysUnavailable("the database failed less than a second ago")
    try:
        close_old_connections()  # a worker thread, outside Django's request cycle
        api_key = ApiKey.objects.select_related("owner").filter(prefix=prefix).first()
        if api_key is None:
            return None
        owner = api_key.owner
        roles = tuple(sorted(owner.groups.values_list("name", flat=True)))
    except DatabaseError as exc:
        _database_failed_at = time.monotonic()
        logger.warning("API key %s could not be looked up: %s", prefix, type(exc).__name__)
        raise ApiKeysUnavailable(type(exc).__name__) from exc
    return ApiKeyRecord(
        prefix=prefix,
        hashed_key=api_key.hashed_key,
        owner_id=owner.pk,
        username=owner.get_username(),
        email=owner.email,
        roles=roles,
        expires_at=api_key.expires_at.timestamp() if api_key.expires_at else None,
        revoked=api_key.revoked_at is not None or not owner.is_active,
    )


def _as_dict(record: ApiKeyRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in ApiKeyRecord.__slots__}


# One thread: touches are rare (once a minute per key) and must never compete with requests.
_touch_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="portier-key-touch")
_touch_slots = threading.BoundedSemaphore(TOUCH_BACKLOG)
_touch_failing = False


def api_key_touch(prefix: str) -> None:
    """Record last use, at most once a minute per key and process, on a background thread: the
    request neither waits for the write nor fails with it."""
    now = time.monotonic()
    if now - _last_touched.get(prefix, float("-inf")) < LAST_USED_EVERY:
        return
    if len(_last_touched) > 10_000:
        _last_touched.clear()
    _last_touched[prefix] = now
    if not _touch_slots.acquire(blocking=False):
        return  # the database is stuck and the backlog full: this use goes unrecorded
    _touch_pool.submit(_touch, prefix)


def _touch(prefix: str) -> None:
    global _touch_failing
    try:
        close_old_connections()
        # update() fires no signals: recording use must not invalidate the key's cache entry.
        ApiKey.objects.filter(prefix=prefix).update(last_used_at=timezone.now())
    except Exception as exc:
        if not _touch_failing:  # once per outage, not once per key
            logger.warning("API keys' last use cannot be recorded: %s", type(exc).__name__)
        _touch_failing = True
    else:
        if _touch_failing:
            logger.info("API keys' last use is recorded again")
        _touch_failing = False
    finally:
        _touch_slots.release()
