"""API key actions (issue, revoke) and the cached lookup the identity stage uses.

Lookup path, fastest first: this process's copy (kept PORTIER_API_KEY_LOCAL_TTL seconds), the
shared cache (Redis), the database (only on a miss, off the event loop). Saving or revoking a key
deletes its shared entry, so every instance sees the change within the local TTL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections
from django.utils import timezone

from accounts.models import ApiKey, User

__all__ = [
    "ApiKeyRecord",
    "api_key_forget",
    "api_key_issue",
    "api_key_lookup",
    "api_key_revoke",
    "api_key_touch",
    "hash_key",
    "parse_key",
]

KEY_PREFIX = "ptr_"
CACHE_KEY = "apikey:{prefix}"
POSITIVE_TTL = 300
NEGATIVE_TTL = 30
LAST_USED_EVERY = 60.0


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


def api_key_forget(prefix: str) -> None:
    """Drop the shared cache entry of a key (called on every change to it or its owner)."""
    cache.delete(CACHE_KEY.format(prefix=prefix))


_local: dict[str, tuple[float, ApiKeyRecord | None]] = {}
_last_touched: dict[str, float] = {}


async def api_key_lookup(key: str) -> ApiKeyRecord | None:
    """The record of a presented key when its secret matches, else None (unknown or wrong)."""
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
    cached = cache.get(CACHE_KEY.format(prefix=prefix))
    if cached is not None:
        return ApiKeyRecord(**cached) if cached else None
    close_old_connections()  # a worker thread, outside Django's request cycle
    api_key = ApiKey.objects.select_related("owner").filter(prefix=prefix).first()
    if api_key is None:
        cache.set(CACHE_KEY.format(prefix=prefix), {}, NEGATIVE_TTL)
        return None
    owner = api_key.owner
    record = ApiKeyRecord(
        prefix=prefix,
        hashed_key=api_key.hashed_key,
        owner_id=owner.pk,
        username=owner.get_username(),
        email=owner.email,
        roles=tuple(sorted(owner.groups.values_list("name", flat=True))),
        expires_at=api_key.expires_at.timestamp() if api_key.expires_at else None,
        revoked=api_key.revoked_at is not None or not owner.is_active,
    )
    cache.set(CACHE_KEY.format(prefix=prefix), _as_dict(record), POSITIVE_TTL)
    return record


def _as_dict(record: ApiKeyRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in ApiKeyRecord.__slots__}


async def api_key_touch(prefix: str) -> None:
    """Record last use, at most once a minute per key and process, off the request's path."""
    now = time.monotonic()
    if now - _last_touched.get(prefix, float("-inf")) < LAST_USED_EVERY:
        return
    _last_touched[prefix] = now
    await sync_to_async(_touch, thread_sensitive=False)(prefix)


def _touch(prefix: str) -> None:
    # update() fires no signals: recording use must not invalidate the key's cache entry.
    close_old_connections()
    ApiKey.objects.filter(prefix=prefix).update(last_used_at=timezone.now())
