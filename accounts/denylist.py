"""The deny-set: users whose earlier credentials must stop working before they expire.

A signed token cannot be recalled, so the gateway keeps a list instead: deactivated users (every
token and API key of theirs is refused) and users signed out everywhere at a time T (their tokens
with `iat` before T are refused). The database is the truth; on commit of a change the whole set
is rebuilt and written to the cache as one JSON value, then its version key. Each gateway process
copies it in memory (a refresher thread polls the version every PORTIER_CONFIG_POLL_INTERVAL, as
routing.config.holder does for the configuration), so the identity stage pays two dictionary
lookups and no I/O per request. A process that cannot reach the cache keeps its last copy; one
that has none (started during the outage) builds it from the database, and runs with an empty
set only when neither answers. A publish that fails to reach the cache is owed: this process's
refresher publishes again once the cache answers, so a Redis that comes back with its old data
does not keep serving the set from before the change.

The set is small (deactivated users and sign-outs), so it is published whole: a reader never
sees half of a change, and publishing needs no merge.
"""

from __future__ import annotations

import contextlib
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
# A publisher waits past the lock's TTL, so one that died holding it has let it go by then.
LOCK_KEY = "identity:deny:lock"
LOCK_TTL = 5
LOCK_WAIT = LOCK_TTL + 1.0
# A replaced version's data is left to expire, not deleted: a process that read the old version
# key just before the switch still finds its data. Only needs to outlive a poll and a load.
OLD_DATA_TTL = 300
# A process whose cache has no deny-set rebuilds it from the database at most this often.
REBUILD_EVERY = 5.0
# The token of a set built from the database while the cache is unreachable: no publish makes it,
# so the next version the cache gives replaces it.
FROM_DATABASE = "local"

publish_owed = False  # a publish from this process failed: the refresher publishes again


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
    in the cache (flushed, evicted): publish unless another process just did.

    A full publish that fails leaves `publish_owed` set (and raises): the change is committed but
    unpublished, and this process's refresher publishes again once the cache answers."""
    global publish_owed
    try:
        published = _publish(only_if_missing=only_if_missing)
    except Exception:
        if not only_if_missing:  # a missing set is noticed again on the next refresh anyway
            publish_owed = True
        raise
    if not only_if_missing or published:
        publish_owed = False
    return published


def _publish(*, only_if_missing: bool) -> bool:
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + LOCK_WAIT
    while not cache.add(LOCK_KEY, owner, LOCK_TTL):
        if time.monotonic() > deadline:
            # Held past its TTL (taken again by each new publisher): go on unordered, rather than
            # leave the change unpublished.
            logger.warning("deny-set publish lock still held after %.0f s, publishing", LOCK_WAIT)
            break
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
        if previous is not None:
            cache.touch(DATA_KEY.format(token=previous), OLD_DATA_TTL)
    finally:
        # Only a lock still ours: one held past its TTL may have been taken by the next publisher.
        # Not atomic with the check; the TTL is far above a read and a delete.
        with contextlib.suppress(Exception):
            if cache.get(LOCK_KEY) == owner:
                cache.delete(LOCK_KEY)
    return True


def _compile(token: str, raw: str | dict[str, Any]) -> DenySet:
    data = json.loads(raw) if isinstance(raw, str) else raw
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
        self._none_anywhere = False  # neither the cache nor the database answered (logged)

    def load(self) -> None:
        """A process's first load: publish from the database when it answers (the truth, which
        also heals a cache that missed a change), then copy what the cache holds; with the cache
        unreachable, the set is read from the database."""
        self._rebuild(only_if_missing=False)
        self.refresh()

    def refresh(self) -> bool:
        """Load the published version if it is not the one held; True when swapped. A failure
        keeps the copy held (logged once per outage); a process holding none reads the database.
        """
        if publish_owed:
            self._publish_owed_change()
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
            if self.current is not EMPTY:
                return False
            return self._load_from_database()
        self._recovered()
        self.current = denied
        return True

    def _load_from_database(self) -> bool:
        """For a process holding no set while the cache is unreachable (started or restarted
        during the outage): the database's, rather than none. Empty only when neither answers."""
        own_connection = not connection.in_atomic_block
        try:
            if own_connection:
                close_old_connections()
            denied = _compile(FROM_DATABASE, deny_set_build())
        except Exception as exc:
            if not self._none_anywhere:
                logger.error(
                    "no deny-set: neither the cache nor the database answers, deactivated users "
                    "and sign-outs are not enforced until one does (%s)",
                    type(exc).__name__,
                )
            self._none_anywhere = True
            return False
        finally:
            if own_connection:
                connection.close()
        self._none_anywhere = False
        logger.warning("deny-set not in reach in the cache: using the database's")
        self.current = denied
        return True

    def _publish_owed_change(self) -> None:
        """Publish again a change whose publish failed (still owed if it fails again)."""
        own_connection = not connection.in_atomic_block
        try:
            if own_connection:
                close_old_connections()
            deny_set_publish()
        except Exception as exc:
            logger.debug("owed deny-set publish failed again: %s", exc)
        else:
            logger.warning("published the deny-set changed while the cache was unreachable")
        finally:
            if own_connection:
                connection.close()

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
