"""The one error shape every gateway answer uses:
`{"error": {"code": "...", "message": "...", "request_id": "..."}}`."""

from __future__ import annotations

import json

from routing.context import GatewayError, GatewayResponse, Headers

__all__ = ["error_body", "error_response"]


def error_body(code: str, message: str, request_id: str) -> bytes:
    return json.dumps(
        {"error": {"code": code, "message": message, "request_id": request_id}}
    ).encode()


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
