"""Publish a new configuration version after every committed change to routing models.

Saving a service with its inline targets fires many signals in one transaction; one publish per
transaction is enough, so the on-commit callback is registered only once. A rolled-back
transaction drops it with everything else. A publish that fails (Redis down) does not fail the
committed save: Django logs it (robust on-commit) and the holder publishes the change once the
cache answers again (routing.config.holder).
"""

from __future__ import annotations

from typing import Any

from django.db import connections, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from routing.config.publish import config_publish

__all__ = ["connect", "publish_on_commit"]


def _publish() -> None:
    config_publish()


def publish_on_commit(sender: Any = None, using: str | None = None, **kwargs: Any) -> None:
    using = using or "default"
    conn = connections[using]
    if conn.in_atomic_block and any(item[1] is _publish for item in conn.run_on_commit):
        return
    transaction.on_commit(_publish, using=using, robust=True)


def connect() -> None:
    from routing.models import (
        GatewayDefaults,
        RateLimitTier,
        RolePolicy,
        Route,
        RouteTierOverride,
        Service,
        Target,
    )

    for model in (
        Service,
        Target,
        Route,
        RolePolicy,
        RateLimitTier,
        RouteTierOverride,
        GatewayDefaults,
    ):
        name = model.__name__
        post_save.connect(publish_on_commit, sender=model, dispatch_uid=f"publish-save-{name}")
        post_delete.connect(publish_on_commit, sender=model, dispatch_uid=f"publish-del-{name}")
    m2m_changed.connect(
        publish_on_commit, sender=RolePolicy.roles.through, dispatch_uid="publish-policy-roles"
    )
