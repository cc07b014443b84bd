"""The gateway's own token endpoints under /auth/ (simplejwt), with a login brute-force limit.

Only failed logins count: 5 per 15 minutes (PORTIER_LOGIN_FAILURE_RATE) per username and per
client IP; past that, 429 rate_limited with Retry-After until the window ends.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django_ratelimit.core import get_usage
from rest_framework import status
from rest_framework.exceptions import APIException, AuthenticationFailed
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import (
    TokenObtainPairView,
    TokenRefreshView,
    TokenVerifyView,
)

from accounts.serializers import PortierTokenObtainSerializer

logger = logging.getLogger("portier.auth")

__all__ = ["LogoutView", "ObtainTokenView", "RefreshTokenView", "VerifyTokenView"]


class Refused(APIException):
    """A refusal with the gateway's stable code; the project's exception handler
    (gateway_site.errors) writes it in the one error shape, `wait` as Retry-After."""

    def __init__(self, status_code: int, code: str, message: str, wait: int | None = None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.wait = wait


def _login_usage(request: Request, username: str, increment: bool) -> list[dict[str, Any]] | None:
    """Failed logins counted per client IP and per username; None when the cache (Redis) cannot
    count: PORTIER_RATELIMIT_FAIL decides then, as for the routes' tiers."""
    rate = settings.PORTIER_LOGIN_FAILURE_RATE
    try:
        usages = [
            get_usage(request, group="login-failures-ip", key="ip", rate=rate, increment=increment),
            get_usage(
                request,
                group="login-failures-user",
                key=lambda _g, _r: username,
                rate=rate,
                increment=increment,
            ),
        ]
    except Exception as exc:  # django-redis and redis-py raise their own connection errors
        logger.warning("failed logins cannot be counted: %s", type(exc).__name__)
        return None
    return [usage for usage in usages if usage is not None]


class ObtainTokenView(TokenObtainPairView):
    """POST username (or email) and password; answers an access and a refresh token."""

    serializer_class = PortierTokenObtainSerializer

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        username = str(request.data.get("username", "")).strip().lower()[:254]
        usages = _login_usage(request, username, increment=False)
        if usages is None and settings.PORTIER_RATELIMIT_FAIL == "closed":
            raise Refused(
                503, "rate_limit_unavailable", "Sign-in is unavailable; try again soon.", wait=1
            )
        blocked = [u for u in usages or () if u["count"] >= u["limit"]]
        if blocked:
            retry_after = max(int(u["time_left"]) for u in blocked) or 1
            raise Refused(
                429, "rate_limited", "Too many failed logins; try again later.", wait=retry_after
            )
        try:
            return super().post(request, *args, **kwargs)
        except AuthenticationFailed:
            _login_usage(request, username, increment=True)
            raise


class RefreshTokenView(TokenRefreshView):
    """POST a refresh token; answers a new access token and a rotated refresh token (the old
    one is blacklisted)."""


class VerifyTokenView(TokenVerifyView):
    """POST a token; 200 when it is valid."""


class LogoutView(APIView):
    """POST a refresh token; it is blacklisted and can no longer be refreshed."""

    def post(self, request: Request) -> Response:
        raw = request.data.get("refresh")
        if not isinstance(raw, str) or not raw:
            raise Refused(400, "invalid_request", "Send the refresh token as `refresh`.")
        try:
            RefreshToken(raw).blacklist()  # type: ignore[arg-type]
        except TokenError:
            raise Refused(401, "invalid_token", "The refresh token is not valid.") from None
        return Response(status=status.HTTP_205_RESET_CONTENT)
