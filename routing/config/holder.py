"""This process's configuration: one immutable snapshot, kept fresh from the cache.

Each process holds one `Snapshot`. A daemon thread polls the version key and, when it changes,
loads and compiles the new snapshot off the event loop, then swaps the reference in one
assignment, so a request always sees one whole configuration. If the cache or database fails,
the process keeps serving its last-known-good snapshot.

When the cache has no snapshot to give (a fresh Redis, a flushed or evicted one, one restarted
without persistence), one process rebuilds it from the database: the first to take the build lock.
The others keep serving what they hold and load the rebuilt version on their next poll, so N
processes cost one build and one version bump, not N.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from routing.config import publish
from routing.config.build import snapshot_build
from routing.config.compiler import snapshot_compile
from routing.config.publish import SNAPSHOT_KEY, VERSION_KEY, config_publish
from routing.config.spec import EMPTY, Snapshot
from routing.periodic import PeriodicThread

__all__ = ["SnapshotHolder", "holder"]

logger = logging.getLogger("portier.snapshot")

# Held while one process rebuilds a missing snapshot. A builder that dies holding it delays the
# next build by at most this long; a build slower than this may run twice (harmless, only extra).
BUILD_LOCK_KEY = "config:build-lock"
BUILD_LOCK_TTL = 10
# How long a starting process waits for another's build before serving with nothing loaded.
BUILD_WAIT = 5.0


def _snapshot_from_database() -> Snapshot:
    """Compile the database's configuration without publishing it: for a process that has no
    snapshot at all while the cache is unreachable (started or restarted during the outage)."""
    from routing.models import ConfigVersion

    version = ConfigVersion.objects.values_list("number", flat=True).filter(pk=1).first() or 0
    # A token no publish makes: the next version the cache gives replaces it.
    return snapshot_compile(snapshot_build(version, f"{version}-local"))


class SnapshotHolder(PeriodicThread):
    """Holds this process's current snapshot and keeps it fresh from the cache: `start` loads
    one (blocking, once), then the refresher thread polls every PORTIER_CONFIG_POLL_INTERVAL."""

    name = "portier-config-refresher"

    def __init__(self) -> None:
        super().__init__()
        self.current: Snapshot = EMPTY
        self.loaded_at: float = 0.0
        self.last_error: str | None = None
        self._built_elsewhere = False  # the last refresh found another process rebuilding

    def interval(self) -> float:
        return settings.PORTIER_CONFIG_POLL_INTERVAL

    def tick(self) -> None:
        self.refresh()

    def starting(self) -> None:
        self.refresh()
        # Another process is rebuilding the snapshot: better to wait briefly for it than to
        # start serving with no routes at all.
        deadline = time.monotonic() + BUILD_WAIT
        while self._built_elsewhere and self.current is EMPTY and time.monotonic() < deadline:
            time.sleep(0.05)
            self.refresh()

    def refresh(self) -> bool:
        """Swap in the published version if it differs from the one held; True if swapped."""
        self._built_elsewhere = False
        if publish.publish_owed:
            self._publish_owed_change()
        try:
            data = self._published()
            if data is None:
                if not self._built_elsewhere:
                    self.last_error = None
                return False
            snapshot = snapshot_compile(data)
        except Exception as exc:
            if self.last_error is None:
                logger.warning(
                    "configuration refresh failed, serving v%s: %s", self.current.version, exc
                )
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.current is not EMPTY:
                return False
            try:
                snapshot = _snapshot_from_database()
            except Exception:
                return False  # no database either: nothing to serve until one answers
            finally:
                self._release_db()
            logger.warning(
                "nothing loaded from the cache: serving v%s from the database", snapshot.version
            )
        else:
            self.last_error = None
        self.current = snapshot
        self.loaded_at = time.time()
        logger.info("serving configuration v%s", snapshot.version)
        return True

    def _published(self) -> dict[str, Any] | None:
        """The published snapshot's data when it is not the one held; None when there is nothing
        new, or another process is rebuilding it."""
        token = cache.get(VERSION_KEY)
        if token is not None and token == self.current.token:
            return None
        raw = None if token is None else cache.get(SNAPSHOT_KEY.format(token=token))
        if raw is None:
            # Never published, or the version key outlived its snapshot (cache flushed, evicted,
            # restarted empty): rebuild, once for every process.
            return self._rebuild(token)
        return json.loads(raw)

    def _rebuild(self, seen: str | None) -> dict[str, Any] | None:
        """Publish from the database if this process wins the build lock (the snapshot's data);
        None when another process holds it (it is building: the next poll loads its result)."""
        owner = uuid.uuid4().hex
        if not cache.add(BUILD_LOCK_KEY, owner, BUILD_LOCK_TTL):
            self._built_elsewhere = True
            return None
        try:
            # The previous holder may have published between our read and our lock.
            token = cache.get(VERSION_KEY)
            if token is not None and token != seen:
                raw = cache.get(SNAPSHOT_KEY.format(token=token))
                if raw is not None:
                    return json.loads(raw)
            try:
                return publish.publish()
            finally:
                self._release_db()
        finally:
            # Not atomic with the check; the lock's TTL is far above a read and a delete.
            with contextlib.suppress(Exception):
                if cache.get(BUILD_LOCK_KEY) == owner:
                    cache.delete(BUILD_LOCK_KEY)

    def _publish_owed_change(self) -> None:
        try:
            config_publish()  # still owed if it fails again
        except Exception as exc:
            logger.debug("owed configuration publish failed again: %s", exc)
        else:
            logger.warning("published the configuration saved while the cache was unreachable")
        finally:
            self._release_db()

    @staticmethod
    def _release_db() -> None:
        # Publishing is rare on the data plane: do not keep a database connection per process.
        if not connection.in_atomic_block:
            connection.close()


holder = SnapshotHolder()
