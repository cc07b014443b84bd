"""The dashboard's fragment in the admin: `/admin/dashboard/fragment?window=15|60[&route=<name>]`,
the dashboard's body (routing.observe.dashboard) as HTML, which the admin index and a route's page
fetch every few seconds (routing/static/portier/dashboard.js) to refresh their charts in place.
Without JavaScript the pages show the same body as of their loading.

Like the route tester (routing.admin_tester), the page belongs to no model: `install` adds its URL
to the admin site. Who may read it is who sees the dashboard: staff with routing.view_route.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from routing.observe.dashboard import dashboard, may_view_dashboard, window_from

__all__ = ["URL_NAME", "fragment_view", "install"]

URL_NAME = "dashboard_fragment"


def fragment_view(request: HttpRequest) -> HttpResponse:
    """The dashboard's body (admin_view makes it never cached, and staff-only)."""
    if not may_view_dashboard(request.user):
        raise PermissionDenied
    found = dashboard(
        window=window_from(request.GET.get("window")), route=request.GET.get("route", "")
    )
    return TemplateResponse(request, "admin/dashboard/body.html", {"dashboard": found})


def install(site: admin.AdminSite) -> None:
    """Add the fragment's URL to `site` (once)."""
    if getattr(site, "_dashboard_installed", False):
        return
    site._dashboard_installed = True  # type: ignore[attr-defined]
    site_urls = site.get_urls

    def get_urls() -> list[URLPattern]:
        fragment = path("dashboard/fragment", site.admin_view(fragment_view), name=URL_NAME)
        return [fragment, *site_urls()]

    site.get_urls = get_urls  # type: ignore[method-assign]


install(admin.site)
