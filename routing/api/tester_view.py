"""`POST /admin/api/tester`: the route tester (routing.api.tester) through the management API.

    {"method": "GET", "host": "api.example.com", "path": "/users/7?full=1",
     "headers": {"X-Version": "2"}, "token": "<jwt or API key>"}

or, instead of a token, `"user": "<username>"`: test as that user. The tester mints an access
token for them as /auth/token would (their roles now), uses it only for this explanation and
shows it nowhere (an upstream header that would carry it reads "(token minted for <user>)").
Testing as someone else takes accounts.view_user besides routing.view_route.

answers the findings as JSON: the route that would match and the candidates that lost, the
admission, identity and policy decisions, the tier and the caller's current count, the upstream
request, the cache and CORS verdicts and the target the balancer would pick. Nothing is
forwarded or counted. Open to staff who may view routes (an auditor with routing.view_route
too): the findings show the configuration, nothing more.
"""

from __future__ import annotations

import re
from typing import Any

from asgiref.sync import async_to_sync
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from accounts.serializers import access_token_for
from routing.api.tester import TesterRequest, explain
from routing.api.views import ManagementApi

__all__ = ["TesterSerializer", "TesterView", "tester_findings_for", "tester_request"]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token: methods, header names


def _latin1_line(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return "\r" not in value and "\n" not in value and "\x00" not in value


class TesterSerializer(serializers.Serializer):
    """The request to explain; `path` may carry its query string."""

    method = serializers.CharField(max_length=32)
    host = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    path = serializers.CharField(max_length=8192)
    headers = serializers.DictField(
        child=serializers.CharField(max_length=8192, allow_blank=True, trim_whitespace=False),
        required=False,
        default=dict,
    )
    token = serializers.CharField(
        max_length=8192, required=False, allow_blank=True, default="", trim_whitespace=True
    )
    user = serializers.CharField(
        max_length=150, required=False, allow_blank=True, default="", trim_whitespace=True
    )

    def validate_method(self, value: str) -> str:
        if not _TOKEN.match(value):
            raise serializers.ValidationError("A method is a token, such as GET.")
        return value.upper()

    def validate_host(self, value: str) -> str:
        if not _latin1_line(value) or " " in value.strip():
            raise serializers.ValidationError("A host name, with an optional port.")
        return value.strip()

    def validate_path(self, value: str) -> str:
        if not value.startswith("/") or not _latin1_line(value) or " " in value:
            raise serializers.ValidationError("A path starting with /, without spaces.")
        return value

    def validate_headers(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 100:
            raise serializers.ValidationError("At most 100 headers.")
        for name, text in value.items():
            if not _TOKEN.match(name):
                raise serializers.ValidationError(f"{name!r} is not a header name.")
            if not _latin1_line(text):
                raise serializers.ValidationError(f"The value of {name} is not one header line.")
        return value

    def validate_token(self, value: str) -> str:
        if not _latin1_line(value):
            raise serializers.ValidationError("A token is one line of text.")
        return value

    def validate_user(self, value: str) -> str:
        if not value:
            return value
        asker = self.context.get("asker")
        if asker is None or not asker.has_perm("accounts.view_user"):
            raise serializers.ValidationError("Testing as a user needs permission to view users.")
        if not User.objects.filter(username=value, is_active=True).exists():
            raise serializers.ValidationError(f"No active user is named {value}.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("token") and attrs.get("user"):
            raise serializers.ValidationError({"user": "Give a token or a user, not both."})
        return attrs


class MayViewRoutes(BasePermission):
    """Staff with routing.view_route: what the findings reveal is route configuration."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(
            user
            and user.is_authenticated
            and user.is_active
            and user.is_staff
            and user.has_perm("routing.view_route")
        )


def tester_request(data: dict[str, Any], client_ip: str) -> TesterRequest:
    """A validated body as the tester's input; the caller's own address stands for the client.
    A `user` becomes a token minted for them (see `tester_findings_for`)."""
    token = data.get("token", "")
    if data.get("user"):
        token = access_token_for(User.objects.get(username=data["user"], is_active=True))
    return TesterRequest(
        method=data["method"],
        host=data.get("host", ""),
        path=data["path"],
        headers=dict(data.get("headers") or {}),
        token=token,
        client_ip=client_ip or "127.0.0.1",
    )


def tester_findings_for(data: dict[str, Any], client_ip: str) -> dict[str, Any]:
    """The findings for a validated body; a token minted for `user` is replaced wherever it
    would show (the upstream's Authorization header on a route that forwards it)."""
    asked = tester_request(data, client_ip)
    found = async_to_sync(explain)(asked)
    if data.get("user"):
        found = _hidden(found, asked.token, f"(token minted for {data['user']})")
        found["tested_as"] = data["user"]
    return found


def _hidden(value: Any, secret: str, shown: str) -> Any:
    if isinstance(value, str):
        return value.replace(secret, shown)
    if isinstance(value, dict):
        return {k: _hidden(v, secret, shown) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_hidden(v, secret, shown) for v in value]
    return value


class TesterView(ManagementApi, APIView):
    """Explain what the gateway would do with a request, from the live configuration."""

    permission_classes = [MayViewRoutes]

    @extend_schema(request=TesterSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        body = TesterSerializer(data=request.data, context={"asker": request.user})
        body.is_valid(raise_exception=True)
        return Response(
            tester_findings_for(body.validated_data, request.META.get("REMOTE_ADDR", ""))
        )
