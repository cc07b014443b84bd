"""The one error shape every gateway answer uses:
`{"error": {"code": "...", "message": "...", "request_id": "..."}}`."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse

from routing.proxy.context import GatewayError, GatewayResponse, Headers, request_id_from

__all__ = ["error_body", "error_response", "json_error", "request_id_of"]


def error_body(code: str, message: str, request_id: str, **extra: Any) -> bytes:
    return json.dumps(
        {"error": {"code": code, "message": message, "request_id": request_id, **extra}}
    ).encode()


def json_error(
    status: int, code: str, message: str, request_id: str = "", **extra: Any
) -> HttpResponse:
    """The shape as a Django response, for the gateway's own views and error pages."""
    response = HttpResponse(
        error_body(code, message, request_id, **extra),
        status=status,
        content_type="application/json",
    )
    if request_id:
        response["X-Request-ID"] = request_id
    return response


def error_response(
    exc: GatewayError, request_id: str, extra_headers: Headers = ()
) -> GatewayResponse:
    body = error_body(exc.code, exc.message, request_id)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-request-id", request_id.encode()),
        *exc.headers,
        *(header for header in extra_headers if header not in exc.headers),
    ]
    return GatewayResponse(exc.status, headers, body=body, error_code=exc.code)


def request_id_of(request: HttpRequest) -> str:
    """This request's id: the client's X-Request-ID when it is sane, else a new one, made once."""
    request = getattr(request, "_request", request)  # DRF's Request wraps Django's
    request_id = getattr(request, "portier_request_id", None)
    if request_id is None:
        header = request.META.get("HTTP_X_REQUEST_ID") or ""
        request_id = request_id_from(header.encode("latin-1", "replace") or None)
        request.portier_request_id = request_id  # type: ignore[attr-defined]
    return request_id
