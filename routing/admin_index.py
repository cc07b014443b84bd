"""The admin index in the order people use it: Gateway routing first (routes, services, role
policies, rate-limit tiers, the route tester, gateway defaults, the versions timeline), then
Accounts and roles (users, API keys, groups), then the Audit trail, then History: the eight
"... changes" pages of django-simple-history gathered in one section, with its own page at
/admin/history/. Whatever else is registered follows, and simplejwt's token blacklist comes last.

The index is the one map: the navigation sidebar, which repeats it beside every page, is off, so
lists and forms get its 300 px back at 1280 px (Home is one click away on every page).
`install` wraps `get_app_list` as routing.admin_tester does, so routing.admin calls it after
installing the tester (whose page is placed too), and adds the History page; an app's own page
(get_app_list with an app label) keeps Django's list.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

__all__ = ["HISTORY_LABEL", "arrange", "install"]

HISTORY_LABEL = "history"
URL_NAME = "history_index"

# Sections in order; within one, models by object name in this order (others after, by name).
ROUTING_ORDER = (
    "Route",
    "Service",
    "RolePolicy",
    "RateLimitTier",
    "RouteTester",
    "GatewayDefaults",
    "ConfigRevision",
    "Target",
)
ACCOUNTS_ORDER = ("User", "ApiKey", "Group")
APP_ORDER = ("routing", "accounts", "audit", HISTORY_LABEL)
LAST = ("token_blacklist",)


def _is_history(model: dict[str, Any]) -> bool:
    return str(model["object_name"]).startswith("Historical")


def _sorted_models(models: list[dict[str, Any]], order: tuple[str, ...]) -> list[dict[str, Any]]:
    rank = {name: i for i, name in enumerate(order)}
    return sorted(models, key=lambda m: (rank.get(m["object_name"], len(order)), m["name"]))


def arrange(apps: list[dict[str, Any]], history_url: str) -> list[dict[str, Any]]:
    """Django's alphabetical app list, regrouped and reordered for the index."""
    by_label = {app["app_label"]: app for app in apps}
    history = [m for app in apps for m in app["models"] if _is_history(m)]
    for app in apps:
        app["models"] = [m for m in app["models"] if not _is_history(m)]
    # Groups are the gateway's roles: they belong with the users, not in a section of their own.
    auth = by_label.pop("auth", None)
    if auth is not None:
        if "accounts" in by_label:
            by_label["accounts"]["models"].extend(auth["models"])
        else:
            by_label["auth"] = auth
    if history:
        by_label[HISTORY_LABEL] = {
            "name": "History",
            "app_label": HISTORY_LABEL,
            "app_url": history_url,
            "has_module_perms": True,
            "models": sorted(history, key=lambda m: m["name"]),
        }
    if "routing" in by_label:
        by_label["routing"]["models"] = _sorted_models(by_label["routing"]["models"], ROUTING_ORDER)
    if "accounts" in by_label:
        by_label["accounts"]["models"] = _sorted_models(
            by_label["accounts"]["models"], ACCOUNTS_ORDER
        )

    def rank(app: dict[str, Any]) -> tuple[int, str]:
        label = app["app_label"]
        if label in APP_ORDER:
            return APP_ORDER.index(label), ""
        return (len(APP_ORDER) + 1 if label in LAST else len(APP_ORDER)), app["name"].lower()

    return sorted((app for app in by_label.values() if app["models"]), key=rank)


def history_view(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    """The History section as a page of its own, like an app's page."""
    sections = [a for a in site.get_app_list(request) if a["app_label"] == HISTORY_LABEL]
    if not sections:
        raise PermissionDenied
    context = {
        **site.each_context(request),
        "title": "History",
        "subtitle": None,
        "app_list": sections,
        "app_label": HISTORY_LABEL,
    }
    return TemplateResponse(request, "admin/app_index.html", context)


def install(site: admin.AdminSite) -> None:
    """Order `site`'s index and add the History page (once)."""
    if getattr(site, "_index_arranged", False):
        return
    site._index_arranged = True  # type: ignore[attr-defined]
    site.enable_nav_sidebar = False
    site_urls = site.get_urls
    site_app_list = site.get_app_list

    def get_urls() -> list[URLPattern]:
        page = path("history/", site.admin_view(partial(history_view, site)), name=URL_NAME)
        return [page, *site_urls()]

    def get_app_list(request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        apps = site_app_list(request, app_label)
        if app_label:
            return apps
        return arrange(apps, reverse(f"{site.name}:{URL_NAME}", current_app=site.name))

    site.get_urls = get_urls  # type: ignore[method-assign]
    site.get_app_list = get_app_list  # type: ignore[method-assign]
