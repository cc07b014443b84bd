"""The gateway's own pages and APIs answer errors in the proxy's one shape
(routing.proxy.errors): Django's 404 and 500 handlers, and DRF's exception handler for /auth/
and the registry API. Every such body carries the request's id (the client's X-Request-ID when
sane, else a new one, kept on the request so every answer to it names the same id), and the
same id in the X-Request-ID header.

One exception: a 403 for signed-in staff on the admin's pages is the admin's own page
(templates/403.html), with the way back; the management API (/admin/api/) answers JSON."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from rest_framework.exceptions import APIException, ValidationError
from rest_framework_simplejwt.exceptions import InvalidToken

from routing.proxy.errors import json_error, request_id_of

__all__ = [
    "bad_request",
    "json_exception_handler",
    "not_found",
    "permission_denied",
    "reserved_not_found",
    "server_error",
]

# DRF's and simplejwt's codes, as the gateway names them.
_CODES = {
    "authentication_failed": "invalid_credentials",
    "no_active_account": "invalid_credentials",
    "token_not_valid": "invalid_token",
    "not_authenticated": "missing_credentials",
    "invalid": "invalid_request",
    "parse_error": "invalid_request",
}


def json_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    """DRF errors in the gateway's one error shape, with a stable code and the request id; an
    exception's `wait` (DRF's convention) is sent as Retry-After."""
    if not isinstance(exc, APIException):
        return None
    request_id = request_id_of(context["request"])
    if isinstance(exc, ValidationError):
        return json_error(
            400, "invalid_request", "The request is not valid.", request_id, fields=exc.detail
        )
    codes = exc.get_codes()
    first = codes if isinstance(codes, str) else "invalid"
    if isinstance(exc, InvalidToken):
        first = "token_not_valid"
    message = str(exc.detail) if isinstance(exc.detail, str) else "The request was refused."
    response = json_error(exc.status_code, _CODES.get(first, first), message, request_id)
    if exc.status_code == 401:
        response["WWW-Authenticate"] = 'Bearer realm="portier"'
    wait = getattr(exc, "wait", None)
    if wait:
        response["Retry-After"] = str(int(wait))
    return response


def reserved_not_found(request: HttpRequest) -> HttpResponse:
    return json_error(404, "not_found", "This gateway path does not exist.", request_id_of(request))


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return json_error(404, "not_found", "This gateway path does not exist.", request_id_of(request))


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Staff refused an admin page see it in the admin, with links back; anything else gets
    the one error shape."""
    user = getattr(request, "user", None)
    in_admin = request.path.startswith("/admin/") and not request.path.startswith("/admin/api/")
    if in_admin and user is not None and user.is_active and user.is_staff:
        from django.contrib import admin  # the admin's apps are ready by the time anyone asks

        context = {
            **admin.site.each_context(request),
            "title": "Permission denied",
            "previous": _previous_page(request),
        }
        return render(request, "403.html", context, status=403)
    return json_error(
        403, "forbidden", "You do not have permission to do this.", request_id_of(request)
    )


def _previous_page(request: HttpRequest) -> str:
    """The page the user came from, when it is one of this site's (else "")."""
    referer = request.META.get("HTTP_REFERER", "")
    try:
        host = request.get_host()
    except DisallowedHost:
        return ""
    same_site = url_has_allowed_host_and_scheme(
        referer, allowed_hosts={host}, require_https=request.is_secure()
    )
    return referer if same_site and referer != request.build_absolute_uri() else ""


def server_error(request: HttpRequest) -> HttpResponse:
    return json_error(
        500,
        "internal_error",
        "The gateway failed to handle the request.",
        request_id_of(request),
    )


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's own refusals (too many form fields, a body Django will not read, a bad
    Host): the one error shape instead of its HTML page."""
    return json_error(400, "bad_request", "The request is not valid.", request_id_of(request))
