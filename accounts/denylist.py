"""The deny-set: users whose earlier credentials must stop working before they expire.

A signed token cannot be recalled, so the gateway keeps a list instead: deactivated users (every
token and API key of theirs is refused) and users signed out everywhere at a time T (their tokens
with `iat` before T are refused). The database is the truth; on commit of a change the whole set
is rebuilt and written to the cache as one JSON value, then its version key. Each gateway process
copies it in memory (a refresher thread polls the version every PORTIER_CONFIG_POLL_INTERVAL, as
routing.config.holder does for the configuration), so the identity stage pays two dictionary
lookups and no I/O per request. A process that cannot reach the cache keeps its last copy.

The set is small (deactivated users and sign-outs), so it is published whole: a reader never
sees half of a change, and publishing needs no merge.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache
from django.db import close_old_connections, connection

__all__ = ["DenySet", "DenySetHolder", "deny_set", "deny_set_build", "deny_set_publish"]

logger = logging.getLogger("portier.denylist")

VERSION_KEY = "identity:deny:version"
DATA_KEY = "identity:deny:{token}"
# Publishers run one after another, each reading the database once it holds the lock, so the last
# value written was read after every earlier commit (an older set cannot overwrite a newer one).
LOCK_KEY = "identity:deny:lock"
LOCK_TTL = 5
LOCK_WAIT = 2.0
# A process whose cache has no deny-set rebuilds it from the database at most this often.
REBUILD_EVERY = 5.0


@dataclass(frozen=True, slots=True)
class DenySet:
    """One published version of the set, as the identity stage reads it."""

    token: str = ""
    inactive: frozenset[str] = frozenset()  # user ids
    not_before: Mapping[str, float] = field(default_factory=dict)  # user id -> epoch seconds

    def refuses_token(self, subject: str, issued_at: float | None) -> bool:
        """A token of a deactivated user, or one issued before its user's sign-out. Tokens carry
        whole seconds: one issued in the sign-out's own second is refused too (sign in again a
        second later), rather than letting one issued just before it through."""
        if subject in self.inactive:
            return True
        cutoff = self.not_before.get(subject)
        return cutoff is not None and (issued_at is None or issued_at < cutoff)

    def refuses_key(self, owner_id: str) -> bool:
        return owner_id in self.inactive


EMPTY = DenySet()


def deny_set_build() -> dict[str, Any]:
    """The set as JSON-able data, read from the database."""
    from accounts.models import User

    inactive = User.objects.filter(is_active=False).values_list("pk", flat=True)
    signed_out = User.objects.filter(tokens_valid_after__isnull=False).values_list(
        "pk", "tokens_valid_after"
    )
    return {
        "inactive": sorted(str(pk) for pk in inactive),
        "not_before": {str(pk): when.timestamp() for pk, when in signed_out},
    }


def deny_set_publish(*, only_if_missing: bool = False) -> bool:
    """Rebuild the set from the database and publish it; True when a new version was written.

    Called on commit of every change to it. `only_if_missing`: for a process that found no set
    in the cache (flushed, evicted): publish unless another process just did."""
    deadline = time.monotonic() + LOCK_WAIT
    while not cache.add(LOCK_KEY, 1, LOCK_TTL):
        if time.monotonic() > deadline:
            break  # a publisher died holding it: go on, the lock only orders publishers
        time.sleep(0.02)
    try:
        previous = cache.get(VERSION_KEY)
        if only_if_missing and previous is not None:
            return False
        data = deny_set_build()
        token = uuid.uuid4().hex
        # No expiry: the set must be there for a process that starts after months of no change.
        cache.set(DATA_KEY.format(token=token), json.dumps(data), None)
        cache.set(VERSION_KEY, token, None)
        if previous is not None:  # a reader that just missed it loads the new one next round
            cache.delete(DATA_KEY.format(token=previous))
    finally:
        cache.delete(LOCK_KEY)
    return True


def _compile(token: str, raw: str) -> DenySet:
    data = json.loads(raw)
    return DenySet(
        token=token,
        inactive=frozenset(str(pk) for pk in data["inactive"]),
        not_before={str(pk): float(when) for pk, when in data["not_before"].items()},
    )


class DenySetHolder:
    """This process's copy of the set; `refresh` runs on a background thread
    (routing.dataplane), never on a request's path."""

    def __init__(self) -> None:
        self.current: DenySet = EMPTY
        self.last_error: str | None = None
        self._rebuilt_at = float("-inf")

    def load(self) -> None:
        """A process's first load: publish from the database when it answers (the truth, which
        also heals a cache that missed a change), then copy what the cache holds."""
        self._rebuild(only_if_missing=False)
        self.refresh()

    def refresh(self) -> bool:
        """Load the published version if it is not the one held; True when swapped. A failure
        keeps the copy held (logged once per outage)."""
        try:
            token = cache.get(VERSION_KEY)
            if token is None:
                self._rebuild()
                token = cache.get(VERSION_KEY)
            if token is None or token == self.current.token:
                self._recovered()
                return False
            raw = cache.get(DATA_KEY.format(token=token))
            if raw is None:  # replaced since the version was read, or evicted: rebuild
                self._rebuild(only_if_missing=False)
                return False
            denied = _compile(token, raw)
        except Exception as exc:
            if self.last_error is None:
                logger.warning("deny-set refresh failed, keeping the last copy: %s", exc)
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        self._recovered()
        self.current = denied
        return True

    def _rebuild(self, *, only_if_missing: bool = True) -> None:
        """Publish the set from the database: at start, and when the cache has none (rarely:
        at most every few seconds per process; with `only_if_missing`, one process builds it)."""
        if time.monotonic() - self._rebuilt_at < REBUILD_EVERY:
            return
        self._rebuilt_at = time.monotonic()
        own_connection = not connection.in_atomic_block  # a caller's transaction is left alone
        try:
            if own_connection:
                close_old_connections()
            deny_set_publish(only_if_missing=only_if_missing)
        except Exception as exc:
            logger.info("deny-set not rebuilt from the database: %s", type(exc).__name__)
        finally:
            if own_connection:
                connection.close()  # rare: no connection is kept open on this thread for it

    def _recovered(self) -> None:
        if self.last_error is not None:
            logger.info("deny-set refreshed again")
        self.last_error = None


deny_set = DenySetHolder()
