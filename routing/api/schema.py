"""The management API's OpenAPI schema: only /admin/api/ (the gateway's other DRF views are not
part of it), with its two ways in described as security schemes."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

__all__ = ["management_only"]


def management_only(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    """drf-spectacular preprocessing hook: the endpoints under /admin/api/ and nothing else."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/admin/api/")]


class UserCredentialsScheme(OpenApiAuthenticationExtension):
    target_class = "routing.api.authentication.UserCredentialsAuthentication"
    name = ["bearerAuth", "apiKeyAuth"]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        return [{"bearerAuth": []}, {"apiKeyAuth": []}]  # either one, not both

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [
            {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        ]


class AdminSessionScheme(OpenApiAuthenticationExtension):
    target_class = "routing.api.authentication.AdminSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}
