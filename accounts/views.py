"""The gateway's own token endpoints under /auth/ (simplejwt), with the failed sign-in limit.

Failed sign-ins are counted per username and IP, per username and per IP (accounts.login_limits,
shared with the admin's login form); past a bound, 429 rate_limited with Retry-After until the
window ends. A body that is not a JSON object is 400 invalid_request, never a 500.
"""

from __future__ import annotations

from typing import Any

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

from accounts.login_limits import login_failure_record, login_limit_check, login_username
from accounts.models import User
from accounts.serializers import PortierTokenObtainSerializer

__all__ = ["LogoutView", "ObtainTokenView", "RefreshTokenView", "VerifyTokenView"]


class Refused(APIException):
    """A refusal with the gateway's stable code; the project's exception handler
    (gateway_site.errors) writes it in the one error shape, `wait` as Retry-After."""

    def __init__(self, status_code: int, code: str, message: str, wait: int | None = None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.wait = wait


def _fields(request: Request) -> dict[str, Any]:
    """The body's fields: a JSON object (or a form). An array, a string or a number is a client
    error, refused before any view reads it as a mapping."""
    data = request.data
    if not isinstance(data, dict):
        raise Refused(400, "invalid_request", "Send the fields as a JSON object.")
    return data


class ObtainTokenView(TokenObtainPairView):
    """POST username (or email) and password; answers an access and a refresh token."""

    serializer_class = PortierTokenObtainSerializer

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        username = login_username(_fields(request).get("username"))
        refusal = login_limit_check(request=request, username=username)
        if refusal is not None:
            raise Refused(refusal.status, refusal.code, refusal.message, wait=refusal.retry_after)
        try:
            return super().post(request, *args, **kwargs)
        except AuthenticationFailed:
            login_failure_record(request=request, username=username)
            raise


class RefreshTokenView(TokenRefreshView):
    """POST a refresh token; answers a new access token and a rotated refresh token (the old
    one is blacklisted)."""

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        _fields(request)
        try:
            return super().post(request, *args, **kwargs)
        except User.DoesNotExist:  # simplejwt looks the token's user up with get()
            raise Refused(401, "invalid_token", "The refresh token is not valid.") from None


class VerifyTokenView(TokenVerifyView):
    """POST a token; 200 when it is valid."""

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        _fields(request)
        return super().post(request, *args, **kwargs)


class LogoutView(APIView):
    """POST a refresh token; it is blacklisted and can no longer be refreshed."""

    def post(self, request: Request) -> Response:
        raw = _fields(request).get("refresh")
        if not isinstance(raw, str) or not raw:
            raise Refused(400, "invalid_request", "Send the refresh token as `refresh`.")
        try:
            RefreshToken(raw).blacklist()  # type: ignore[arg-type]
        except TokenError:
            raise Refused(401, "invalid_token", "The refresh token is not valid.") from None
        return Response(status=status.HTTP_205_RESET_CONTENT)
