"""/api-docs: the public catalogue of the APIs behind the gateway, for the clients that call them.

Built from the live snapshot (routing.config.holder), never the database: it lists exactly what
this process routes now. Disabled routes are not in the snapshot, so never here. Each route says
its path, how the path matches, its methods and hosts, and whether a token is needed (its policy
kind, and for role policies which roles: a client needs to know which role to ask for).

What is not for everyone:

- admin-only routes and audited routes are listed only to a caller whose credentials (Bearer JWT
  or API key, the proxy's own rules: routing.proxy.stages.identity) carry the admin role; an
  anonymous or non-admin caller does not learn they exist, nor a service reached only by them;
- upstream target URLs (internal addresses) are never listed, to anyone; operators read them
  in the admin or /health/services.

Credentials are optional, but credentials that are present must be valid: a bad one is 401 in
the standard error shape, as on every route. JSON by default; an HTML page (templates/
api_docs.html, no external assets) when the Accept header prefers text/html, as a browser's does.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.views.decorators.csrf import csrf_exempt

from routing import dataplane
from routing.config.holder import holder
from routing.config.spec import RouteSpec, Snapshot
from routing.proxy.context import GatewayError, Identity
from routing.proxy.errors import json_error, request_id_of
from routing.proxy.stages.identity import identify

__all__ = ["api_docs", "catalogue"]

_SHOWN_TO_ADMINS_ONLY = "admin_only"
_TOKEN_FREE = {"public"}
# Which answer a client gets: JSON first, so `*/*` (curl, scripts) gets JSON.
_MEDIA_TYPES = ["application/json", "text/html"]


@csrf_exempt  # it changes nothing: other methods get the standard 405, not a CSRF page
async def api_docs(request: HttpRequest) -> HttpResponse:
    """GET /api-docs: the catalogue as the caller may see it, as JSON or an HTML page."""
    request_id = request_id_of(request)
    if request.method not in {"GET", "HEAD"}:
        response = json_error(
            405, "method_not_allowed", "The catalogue is read with GET.", request_id
        )
        response["Allow"] = "GET, HEAD"
        return response
    await dataplane.started()  # the snapshot, and the deny-set identify consults
    try:
        identity = await identify(_header(request, "Authorization"), _header(request, "X-API-Key"))
    except GatewayError as exc:
        response = json_error(exc.status, exc.code, exc.message, request_id)
        for name, value in exc.headers:
            response[name.decode("latin-1")] = value.decode("latin-1")
        return response
    body = catalogue(holder.current, is_admin=_is_admin(identity))
    if request.get_preferred_type(_MEDIA_TYPES) == "text/html":
        response = HttpResponse(render_to_string("api_docs.html", body))
    else:
        response = JsonResponse(body, json_dumps_params={"indent": 2})
    # The answer depends on who asks and how: no shared cache may hand it to someone else.
    response["Cache-Control"] = "private, no-cache"
    response["Vary"] = "Accept, Authorization, X-API-Key"
    if request_id:
        response["X-Request-ID"] = request_id
    return response


def catalogue(snapshot: Snapshot, *, is_admin: bool) -> dict[str, Any]:
    """The snapshot's services and their routes, as plain data; a service is listed when at
    least one of its routes is shown to this caller."""
    services: dict[str, list[dict[str, Any]]] = {}
    for route in snapshot.routes:
        if not is_admin and _admins_only(route):
            continue
        services.setdefault(route.service.name, []).append(_route_entry(route))
    return {
        "title": "APIs behind this gateway",
        "config_version": snapshot.version,
        "services": [
            {"name": name, "routes": sorted(routes, key=lambda r: (r["path"], r["name"]))}
            for name, routes in sorted(services.items())
        ],
    }


def _admins_only(route: RouteSpec) -> bool:
    """Admin-only routes, and audited ones (whose very existence says something is sensitive)."""
    return route.audit or (route.policy is not None and route.policy.kind == _SHOWN_TO_ADMINS_ONLY)


def _route_entry(route: RouteSpec) -> dict[str, Any]:
    access = route.policy.kind if route.policy is not None else "public"
    return {
        "name": route.name,
        "path": route.path,
        "match": route.match_type,
        "methods": sorted(route.methods),  # as routed (GET brings HEAD); empty: any method
        "hosts": list(route.hosts),  # empty: any host
        "token_required": access not in _TOKEN_FREE,
        "access": access,
        "roles": sorted(route.policy.roles) if route.policy is not None else [],
        "audited": route.audit or access == _SHOWN_TO_ADMINS_ONLY,
    }


def _is_admin(identity: Identity | None) -> bool:
    return identity is not None and settings.PORTIER_ADMIN_ROLE in identity.roles


def _header(request: HttpRequest, name: str) -> bytes | None:
    value = request.headers.get(name)
    return value.encode("latin-1") if value is not None else None
