"""CORS on the gateway's own APIs (/auth/, the management API under /admin/api/, /api-docs),
by the gateway-wide rules: the same compiled rules and the same code (routing.proxy.cors) as the
proxied routes, read from this process's configuration snapshot.

A preflight is answered here, before sign-in, CSRF or permissions (a browser sends it without
credentials); a disallowed origin gets 403 origin_not_allowed and no Access-Control-Allow-*
header. Never with Access-Control-Allow-Credentials: the management API accepts the admin's
session cookie. The admin's HTML pages are same-origin only and get none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import lru_cache

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

from routing.config.edge import CorsSpec
from routing.config.holder import holder
from routing.proxy.cors import actual_headers, is_preflight, preflight_headers
from routing.proxy.errors import json_error, request_id_of

__all__ = ["GatewayApiCorsMiddleware"]

API_PATHS = ("/auth/", "/admin/api/", "/api-docs")


class GatewayApiCorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        cors = holder.current.edge.cors
        if cors is None or not request.path.startswith(API_PATHS):
            return self.get_response(request)
        cors = _without_credentials(cors)
        origin = _header(request, "HTTP_ORIGIN")
        asked = _header(request, "HTTP_ACCESS_CONTROL_REQUEST_METHOD")
        if is_preflight(request.method or "", origin, asked):
            assert origin is not None
            headers = preflight_headers(
                cors, origin, _header(request, "HTTP_ACCESS_CONTROL_REQUEST_HEADERS")
            )
            if headers is None:
                response = json_error(
                    403,
                    "origin_not_allowed",
                    "This origin may not call the gateway's API from a browser.",
                    request_id_of(request),
                )
                patch_vary_headers(response, ["Origin"])
                return response
            response = HttpResponse(status=204)
        else:
            response = self.get_response(request)
            headers = actual_headers(cors, origin)
        for name, value in headers:
            if name == b"vary":  # joined to what the view varies on (Cookie, Accept, ...)
                patch_vary_headers(response, value.decode().split(", "))
            else:
                response.headers[name.decode()] = value.decode("latin-1")
        return response


@lru_cache(maxsize=4)
def _without_credentials(cors: CorsSpec) -> CorsSpec:
    """The gateway-wide rules minus credentials: the management API also takes the admin's
    session cookie, which another site must never be able to spend, even one the proxied
    routes trust. Bearer tokens and API keys travel in headers and need no credentials mode."""
    return dataclasses.replace(cors, credentials=False)


def _header(request: HttpRequest, key: str) -> bytes | None:
    value = request.META.get(key)
    return None if value is None else value.encode("latin-1", "replace")
