"""Publish the database's configuration as a new version in the cache.

Every committed change calls `config_publish()` (routing.signals): it bumps the version row
under a lock, builds the configuration (routing.config.build) and stores it as JSON under its
version's token; every process's holder (routing.config.holder) then loads it. The
`version_publishing` signal lets the control plane record each version (the timeline,
routing.api.revisions) without this module reaching up into it.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import F
from django.dispatch import Signal
from django.utils import timezone

from routing.config.build import snapshot_build

__all__ = [
    "SNAPSHOT_KEY",
    "SNAPSHOT_TTL",
    "VERSION_KEY",
    "config_publish",
    "publish",
    "version_publishing",
]

logger = logging.getLogger("portier.snapshot")

# Sent inside publish's transaction with the new version's `number`.
version_publishing = Signal()

VERSION_KEY = "config:version"
SNAPSHOT_KEY = "config:snapshot:{token}"
# Old versions only need to outlive the slowest process's poll.
SNAPSHOT_TTL = 24 * 3600

publish_owed = False  # a publish from this process failed to reach the cache


def config_publish() -> str:
    """Build the configuration from the database and publish it as a new version (its token)."""
    return str(publish()["token"])


def publish() -> dict[str, Any]:
    """config_publish, answering the published data itself (a rebuilding holder serves it
    without reading back and parsing what it just wrote).

    The version row's UPDATE takes a row lock (a write lock on SQLite) before anything is read, so
    concurrent publishers run one after another and the last to publish has read every commit.
    """
    from routing.models import ConfigVersion

    global publish_owed
    ConfigVersion.objects.get_or_create(pk=1)
    with transaction.atomic():
        ConfigVersion.objects.filter(pk=1).update(
            number=F("number") + 1, published_at=timezone.now()
        )
        version = ConfigVersion.objects.values_list("number", flat=True).get(pk=1)
        token = f"{version}-{uuid.uuid4().hex[:12]}"
        data = snapshot_build(version, token)
        # Receivers run in this transaction, so a publish that fails below leaves no trace:
        # the timeline (routing.api.revisions) records the version there.
        version_publishing.send(sender=None, number=version)
        try:
            cache.set(SNAPSHOT_KEY.format(token=token), json.dumps(data), SNAPSHOT_TTL)
            cache.set(VERSION_KEY, token, None)
        except Exception:
            # The change is committed but unpublished, and a Redis that comes back with its data
            # would keep serving the version before it: this process's holder publishes again
            # once the cache answers (a Redis that comes back empty is rebuilt anyway).
            publish_owed = True
            raise
    publish_owed = False
    logger.info("published configuration v%s (%d routes)", version, len(data["routes"]))
    return data
