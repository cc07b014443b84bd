"""A database outage on the gateway's own pages: a clear 503, never a crash page.

Proxying never needs the database (routing.config), but the admin and /auth/ do. Left alone, a
refused connection would surface as a 500 (with DEBUG on, Django's page of settings and stack).
This middleware answers 503 instead: a plain HTML page under /admin/, the gateway's JSON error
shape elsewhere, and one log line naming the error but never the DSN or its password.
"""

from __future__ import annotations

import logging
import re

from django.db import connection
from django.db.utils import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils.deprecation import MiddlewareMixin

from routing.proxy.errors import error_body, request_id_of

__all__ = ["DATABASE_ERRORS", "DatabaseUnavailableMiddleware", "database_unavailable"]

logger = logging.getLogger("portier.database")

DATABASE_ERRORS = (OperationalError, InterfaceError)
RETRY_AFTER = "5"
_ADMIN = re.compile(r"^/admin(?:/|$)")
# Whatever a driver's message might echo of a connection string.
_SECRETS = re.compile(r"(password\s*=\s*)\S+|(://)[^@/\s]*@", re.IGNORECASE)


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """Turns a database that cannot be reached into 503 database_unavailable."""

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if not _ADMIN.match(request.path_info):
            return None
        # The login page renders without a query, so an admin would only learn of the outage
        # after typing a password: check first. This is Django's own per-request health check
        # (CONN_HEALTH_CHECKS), done a step earlier, so a healthy database costs no extra query.
        try:
            connection.close_if_health_check_failed()
            connection.ensure_connection()
        except DATABASE_ERRORS as exc:
            return database_unavailable(request, exc)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_ERRORS):
            return database_unavailable(request, exception)
        return None


def database_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    """The 503 for a request that needed the database, logged once."""
    request_id = request_id_of(request)
    logger.warning(
        "database unavailable: %s %s answered 503 (%s: %s)",
        request.method,
        request.path,
        type(exc).__name__,
        _reason(exc),
        extra={"request_id": request_id},
    )
    if _ADMIN.match(request.path_info):
        response = HttpResponse(
            render_to_string("database_unavailable.html", {"request_id": request_id}),
            status=503,
            content_type="text/html; charset=utf-8",
        )
    else:
        body = error_body(
            "database_unavailable",
            "The gateway's database is unavailable; try again shortly.",
            request_id,
        )
        response = HttpResponse(body, status=503, content_type="application/json")
    response["Retry-After"] = RETRY_AFTER
    response["Cache-Control"] = "no-store"
    response["X-Request-ID"] = request_id
    # This warning is the outage's one line: Django would add an ERROR for every 5xx it sends.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def _reason(exc: Exception) -> str:
    """The driver's first line (e.g. "Connection refused"), with anything secret-looking cut."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return _SECRETS.sub(lambda m: f"{m.group(1)}***" if m.group(1) else "://***@", first)[:200]
