"""Template tags of Portier's admin pages."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django import template
from django.utils import timezone

from routing.config.holder import holder
from routing.observe import traffic_stats

__all__ = ["TrafficTable", "traffic_summary"]

register = template.Library()
logger = logging.getLogger("portier.traffic")


@dataclass(frozen=True, slots=True)
class TrafficTable:
    """What the admin index shows of the traffic summary."""

    window: int  # complete minutes covered, before the current one
    labels: tuple[str, ...]  # each minute's start (HH:MM, local time), oldest first
    summary: traffic_stats.TrafficSummary | None
    error: str = ""


@register.simple_tag(takes_context=True)
def traffic_summary(context: dict[str, Any]) -> TrafficTable | None:
    """The last minutes of traffic per route, for staff who may see the routes (None otherwise).

    Auditors are staff too, but see neither the routes nor their traffic.
    """
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_active or not user.is_staff:
        return None
    if not user.has_perm("routing.view_route"):
        return None
    routes = [route.name for route in holder.current.routes]
    try:
        found = traffic_stats.summary(routes=routes)
    except Exception as exc:  # the cache is down: the rest of the index still works
        logger.warning("traffic summary unavailable: %s", exc)
        return TrafficTable(traffic_stats.WINDOW, (), None, "the cache did not answer")
    labels = tuple(
        timezone.localtime(datetime.fromtimestamp(minute * 60, tz=UTC)).strftime("%H:%M")
        for minute in found.minutes
    )
    return TrafficTable(traffic_stats.WINDOW, labels, found)
