"""Purge a route's cached answers on every instance: the admin's action and the management API's
endpoint both call `purge_route_cache`.

Entries live under a namespace compiled from the route's row and its service's
(routing.config.cache), so bumping the route's `cache_generation` publishes a configuration in
which no entry stored before is ever looked up again, on every instance as soon as it loads it;
the history records who purged. The
old entries are then deleted from Redis so they stop taking memory (the in-process cache of the
embedded default lets them expire).
"""

from __future__ import annotations

import logging

from django.core.cache import cache
from django.db import transaction

from routing.models import Route

__all__ = ["CACHE_KEY_PREFIX", "purge_route_cache"]

logger = logging.getLogger("portier.cache")

CACHE_KEY_PREFIX = "rc"  # every entry's key: rc:<route id>:<digest>:<hash>


def purge_route_cache(route: Route) -> int:
    """Make every stored answer of the route unreachable, then drop what Redis holds of it.
    Returns the route's new generation."""
    with transaction.atomic():
        locked = Route.objects.select_for_update().get(pk=route.pk)
        locked.cache_generation += 1
        locked.save(update_fields=["cache_generation", "updated_at"])
    route.cache_generation = locked.cache_generation
    delete_pattern = getattr(cache, "delete_pattern", None)
    if delete_pattern is not None:
        try:
            delete_pattern(f"{CACHE_KEY_PREFIX}:{route.pk}:*")
        except Exception as exc:  # Redis down: the entries are unreachable anyway
            logger.warning("cache purge of route %s left entries to expire: %r", route, exc)
    return locked.cache_generation
