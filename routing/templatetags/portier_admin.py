"""Template tags of Portier's admin pages: the live dashboard on the index and a route's page."""

from __future__ import annotations

from typing import Any

from django import template

from routing.observe.dashboard import Dashboard, dashboard, may_view_dashboard, window_from

__all__ = ["gateway_dashboard", "route_dashboard"]

register = template.Library()


def _allowed(context: dict[str, Any]) -> Any:
    """The request, when its user may see the dashboard (None otherwise)."""
    request = context.get("request")
    return request if may_view_dashboard(getattr(request, "user", None)) else None


@register.simple_tag(takes_context=True)
def gateway_dashboard(context: dict[str, Any]) -> Dashboard | None:
    """The whole gateway's dashboard, over the window the page's query asks for (?window=60),
    for staff who may see the routes (None otherwise: auditors are staff too, but see neither
    the routes nor their traffic)."""
    request = _allowed(context)
    if request is None:
        return None
    return dashboard(window=window_from(request.GET.get("window")))


@register.simple_tag(takes_context=True)
def route_dashboard(context: dict[str, Any], route: Any) -> Dashboard | None:
    """One route's charts, for its page (None for a route not saved yet, or a user who may not
    see the dashboard)."""
    request = _allowed(context)
    name = getattr(route, "name", "")
    if request is None or not name or getattr(route, "pk", None) is None:
        return None
    return dashboard(window=window_from(request.GET.get("window")), route=name)
