"""/registry/: instances register themselves, heartbeat and leave (routing.upstream.registry
keeps them).

    PUT    /registry/services/<service>/instances/<id>            register, or re-register
    POST   /registry/services/<service>/instances                 register under a new id
    POST   /registry/services/<service>/instances/<id>/heartbeat  renew the TTL
    DELETE /registry/services/<service>/instances/<id>            leave at once
    GET    /registry/services/<service>/instances                 the live instances

Callers authenticate as on proxied routes (Bearer JWT or API key) and need the registrar role
(PORTIER_REGISTRAR_ROLE, for every service), `registrar:<service>` (for that one), or the admin
role; the service must allow registration (admin). An instance belongs to whoever registered it:
only they (or an admin) may re-register, heartbeat or remove it (409 instance_owned). An
address that is one of the service's static targets is refused (409 instance_is_static_target):
the pool holds it once, as the static target, and every view reports it as that.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync
from django.conf import settings
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisClusterException, RedisError
from rest_framework import serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import APIException, AuthenticationFailed, NotFound, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from routing import dataplane
from routing.config.holder import holder
from routing.config.spec import ServiceSpec
from routing.proxy.context import GatewayError, Identity
from routing.proxy.stages.identity import identify
from routing.upstream import registry
from routing.validators import validate_upstream_url

__all__ = ["HeartbeatView", "InstanceView", "InstancesView"]

logger = logging.getLogger("portier.registry")

# What django-redis and redis-py raise when Redis cannot answer.
_REDIS_DOWN = (ConnectionInterrupted, RedisError, RedisClusterException)

_INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_METADATA_LIMIT = 2048  # bytes of JSON


class Caller:
    """A caller authenticated by the gateway's own rules, as DRF's request.user."""

    is_authenticated = True

    def __init__(self, identity: Identity) -> None:
        self.identity = identity


class _Unavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "unavailable"


class GatewayAuthentication(BaseAuthentication):
    """The proxy's credentials (routing.proxy.stages.identity) for DRF views: one rule set."""

    def authenticate(self, request: Request) -> tuple[Caller, Identity] | None:
        headers = request._request.headers
        authorization, api_key = headers.get("Authorization"), headers.get("X-API-Key")
        try:
            identity = async_to_sync(identify)(
                authorization.encode("latin-1") if authorization is not None else None,
                api_key.encode("latin-1") if api_key is not None else None,
            )
        except GatewayError as exc:
            if exc.status >= 500:  # identity_unavailable: the caller may be fine, retry later
                raise _Unavailable(exc.message, code=exc.code) from None
            raise AuthenticationFailed(exc.message, code=exc.code) from None
        return (Caller(identity), identity) if identity is not None else None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="portier"'


class IsRegistrar(BasePermission):
    """The registrar role for every service, `registrar:<service>` for one, or the admin role."""

    message = "Registering instances of this service needs the registrar role."
    code = "forbidden"

    def has_permission(self, request: Request, view: Any) -> bool:
        identity = request.auth
        if identity is None:
            return False
        role = settings.PORTIER_REGISTRAR_ROLE
        allowed = {role, f"{role}:{view.kwargs.get('service', '')}", settings.PORTIER_ADMIN_ROLE}
        return bool(allowed & identity.roles)


def _owner(request: Request) -> tuple[str, bool]:
    """Who registers (an instance is theirs alone), and whether they may act on anyone's."""
    identity: Identity = request.auth
    return (
        f"{identity.method}:{identity.subject}",
        settings.PORTIER_ADMIN_ROLE in identity.roles,
    )


class InstanceSerializer(serializers.Serializer):
    # The one SSRF rule (routing.validators), as for static targets. A field validator, so it
    # runs (and names the refused address) beside URLField's own check.
    url = serializers.URLField(max_length=300, validators=[validate_upstream_url])
    weight = serializers.IntegerField(min_value=1, max_value=1000, default=100)
    ttl = serializers.IntegerField(
        min_value=2, max_value=3600, default=30, help_text="Seconds until expiry, unless renewed."
    )
    metadata = serializers.DictField(required=False, default=dict)

    def validate_url(self, value: str) -> str:
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            raise serializers.ValidationError("An instance URL holds no query or fragment.")
        return value.rstrip("/")

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value)) > _METADATA_LIMIT:
            raise serializers.ValidationError(f"Metadata is limited to {_METADATA_LIMIT} bytes.")
        return value


class RegistryFull(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = f"The service already has {registry.MAX_INSTANCES} registered instances."
    default_code = "registry_full"


class InstanceOwned(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Another caller registered this instance; only they or an admin may change it."
    default_code = "instance_owned"


class InstanceIsStaticTarget(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = (
        "This address is a static target of the service: it is already balanced and reported as "
        "that target, so it cannot also be registered as an instance."
    )
    default_code = "instance_is_static_target"


class RegistryBusy(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The registry is busy; try again shortly."
    default_code = "registry_busy"


class RegistryUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The registry cannot be reached; try again shortly."
    default_code = "registry_unavailable"


_REFUSALS: dict[type[Exception], type[APIException]] = {
    registry.RegistryFull: RegistryFull,
    registry.RegistryBusy: RegistryBusy,
    registry.InstanceOwned: InstanceOwned,
    registry.InstanceIsStaticTarget: InstanceIsStaticTarget,
}


class _RegistryView(APIView):
    authentication_classes = [GatewayAuthentication]
    permission_classes = [IsRegistrar]

    def handle_exception(self, exc: Exception) -> Response:
        """routing.upstream.registry's refusals as their API errors, in one place for every view."""
        answer = _REFUSALS.get(type(exc))
        if answer is not None:
            exc = answer()
        elif isinstance(exc, _REDIS_DOWN):
            # Instances live in Redis: while it is unreachable the answer is "try again" (503),
            # not a 500. The gateway itself keeps routing to the instances it already knows.
            logger.warning("registry call failed, Redis unreachable: %r", exc)
            exc = RegistryUnavailable()
        return super().handle_exception(exc)

    def service(self, name: str) -> ServiceSpec:
        dataplane.start()
        service = holder.current.services.get(name)
        if service is None:
            raise NotFound("No enabled service has this name.", code="unknown_service")
        if not service.allow_registration:
            raise PermissionDenied(
                "This service does not accept registered instances.", code="registration_disabled"
            )
        return service

    def register(self, request: Request, service: str, instance_id: str) -> Response:
        if not _INSTANCE_ID.match(instance_id):
            raise NotFound("Instance ids are 1-64 letters, digits, '.', '_' or '-'.")
        served = self.service(service)
        data = InstanceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        owner, override = _owner(request)
        instance, created = registry.instance_register(
            service=service,
            instance_id=instance_id,
            owner=owner,
            override=override,
            served=served,
            **data.validated_data,
        )
        return Response(
            {"instance": instance.as_dict(), "expires_in": instance.ttl},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class InstancesView(_RegistryView):
    def get(self, request: Request, service: str) -> Response:
        served = self.service(service)
        live = registry.instances_by_service([service])[service]
        # As the health board does: an address that became a static target is served as that.
        balanced = [i for i in live if not registry.is_static_target(served, i.target)]
        return Response({"service": service, "instances": [i.as_dict() for i in balanced]})

    def post(self, request: Request, service: str) -> Response:
        return self.register(request, service, registry.new_instance_id())


class InstanceView(_RegistryView):
    def put(self, request: Request, service: str, instance_id: str) -> Response:
        return self.register(request, service, instance_id)

    def delete(self, request: Request, service: str, instance_id: str) -> Response:
        self.service(service)
        owner, override = _owner(request)
        removed = registry.instance_deregister(
            service=service, instance_id=instance_id, owner=owner, override=override
        )
        if not removed:
            raise NotFound("No live instance has this id.", code="not_registered")
        return Response(status=status.HTTP_204_NO_CONTENT)


class HeartbeatView(_RegistryView):
    def post(self, request: Request, service: str, instance_id: str) -> Response:
        served = self.service(service)
        owner, override = _owner(request)
        instance = registry.instance_heartbeat(
            service=service,
            instance_id=instance_id,
            owner=owner,
            override=override,
            served=served,
        )
        if instance is None:
            raise NotFound(
                "No live instance has this id (it expired): register it again.",
                code="not_registered",
            )
        return Response({"instance": instance.as_dict(), "expires_in": instance.ttl})
