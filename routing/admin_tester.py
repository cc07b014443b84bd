"""The route tester in the admin: a form (method, host, path, headers as `Name: value` lines,
token, API key or a user to test as) and the findings of routing.api.tester as a readable report, at
/admin/routing/tester/. A route's page links to it with its path and first method filled in.

The page belongs to no model, so it has no ModelAdmin to hang its URL on: `install` adds it to
the admin site's URLs and lists it under Routing on the index. Who may open it is who may call
`POST /admin/api/tester`: staff with routing.view_route.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from routing.api.tester_view import TesterSerializer, tester_findings_for

__all__ = ["install", "tester_view"]

URL_NAME = "routing_tester"


def _may_test(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff and user.has_perm("routing.view_route"))


def _header_lines(text: str) -> tuple[dict[str, str], list[str]]:
    """`Name: value` lines as a dict, and the lines that are not one."""
    headers: dict[str, str] = {}
    bad: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            bad.append(line)
            continue
        headers[name.strip()] = value.strip()
    return headers, bad


def tester_view(request: HttpRequest) -> HttpResponse:
    """GET: the form, filled from the query (?method=&host=&path=); POST: the findings too."""
    if not _may_test(request):
        raise PermissionDenied
    source = request.POST if request.method == "POST" else request.GET
    fields = ("method", "host", "path", "headers", "token", "user")
    form = {k: source.get(k, "") for k in fields}
    form["method"] = form["method"] or "GET"
    findings: dict[str, Any] | None = None
    errors: dict[str, Any] = {}
    if request.method == "POST":
        headers, bad = _header_lines(form["headers"])
        if bad:
            errors["headers"] = [f"Not a `Name: value` line: {line}" for line in bad]
        body = TesterSerializer(data={**form, "headers": headers}, context={"asker": request.user})
        if body.is_valid() and not errors:
            findings = tester_findings_for(body.validated_data, request.META.get("REMOTE_ADDR", ""))
        else:
            errors |= {k: [str(e) for e in v] for k, v in body.errors.items()}
    context = {
        **admin.site.each_context(request),
        "title": "Route tester",
        "form": form,
        "errors": errors,
        "findings": findings,
    }
    status = 400 if errors else 200
    return TemplateResponse(request, "admin/routing/tester.html", context, status=status)


def install(site: admin.AdminSite) -> None:
    """Add the page to `site`'s URLs and to the Routing section of its index (once)."""
    if getattr(site, "_route_tester_installed", False):
        return
    site._route_tester_installed = True  # type: ignore[attr-defined]
    site_urls = site.get_urls
    site_app_list = site.get_app_list

    def get_urls() -> list[URLPattern]:
        page = path("routing/tester/", site.admin_view(tester_view), name=URL_NAME)
        return [page, *site_urls()]

    def get_app_list(request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        apps = site_app_list(request, app_label)
        if _may_test(request):
            for app in apps:
                if app["app_label"] == "routing":
                    app["models"].append(
                        {
                            "name": "Route tester",
                            "object_name": "RouteTester",
                            "admin_url": reverse(f"{site.name}:{URL_NAME}"),
                            "add_url": None,
                            "view_only": True,
                            "perms": {"view": True},
                        }
                    )
        return apps

    site.get_urls = get_urls  # type: ignore[method-assign]
    site.get_app_list = get_app_list  # type: ignore[method-assign]


install(admin.site)

# The dashboard's fragment registers itself the same way (routing/admin.py imports this module).
from routing import admin_dashboard  # noqa: E402, F401
