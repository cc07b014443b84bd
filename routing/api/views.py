"""The management API's resources: services, routes, policies, tiers, API keys and the audit
trail, by name where a name is the natural key (`/admin/api/routes/users`), and the gateway-wide
defaults, one object at `/admin/api/defaults`. `POST /admin/api/routes/{name}/purge-cache` purges a
route's cached answers (routing.cache_purge; the change permission on routes).

Each write runs in one transaction, so routing.signals publishes one configuration version for
it, and simple_history records it with the API caller as the history user.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import ProtectedError, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.generics import get_object_or_404
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import ApiKey
from accounts.services import api_key_revoke
from audit.models import AuditEntry
from routing.api import serializers
from routing.api.authentication import AdminSessionAuthentication, UserCredentialsAuthentication
from routing.api.concurrency import etag_of, require_current
from routing.api.key_serializers import ApiKeySerializer
from routing.api.permissions import ModelPermissions
from routing.api.record_serializers import AuditEntrySerializer
from routing.cache_purge import purge_route_cache
from routing.models import GatewayDefaults, RateLimitTier, RolePolicy, Route, Service

__all__ = [
    "ApiKeyViewSet",
    "AuditEntryViewSet",
    "DefaultsViewSet",
    "ManagementApi",
    "PolicyViewSet",
    "RouteViewSet",
    "ServiceViewSet",
    "TierViewSet",
    "query_datetime",
]

_NAME = r"[-a-zA-Z0-9_]+"


def filters(*names: str) -> Any:
    """The list's query-parameter filters, in the OpenAPI schema."""
    parameters = [OpenApiParameter(name, str, description=f"Filter by {name}.") for name in names]
    return extend_schema_view(list=extend_schema(parameters=parameters))


class Pages(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class ChangePermission(ModelPermissions):
    """An action that changes an object without creating one (a POST): the change permission."""

    perms_map = {**ModelPermissions.perms_map, "POST": ["%(app_label)s.change_%(model_name)s"]}


class InUse(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Other configuration still refers to this object; change or delete it first."
    default_code = "in_use"


def query_datetime(request: Request, name: str, *, end_of_day: bool = False) -> datetime | None:
    """?since= / ?until= as an ISO date or date-time; a bad one is a 400 naming the parameter."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        moment = parse_datetime(raw)
        if moment is None and (day := parse_date(raw)) is not None:
            moment = datetime.combine(
                day, datetime.max.time() if end_of_day else datetime.min.time()
            )
    except (ValueError, OverflowError):
        moment = None
    if moment is None:
        raise ValidationError({name: "Use an ISO date or date-time, e.g. 2026-01-31T12:00:00Z."})
    if moment.tzinfo is None:
        moment = timezone.make_aware(moment)
    return moment


class ManagementApi:
    """What every management API view shares: who may call it, pages, the error shape."""

    authentication_classes = [UserCredentialsAuthentication, AdminSessionAuthentication]
    permission_classes = [ModelPermissions]
    pagination_class = Pages


class ETagged:
    """Every object answered (read, created, changed) carries its ETag."""

    action: str | None

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        single = self.action in {"retrieve", "create", "update", "partial_update"}
        if single and isinstance(response, Response) and response.status_code < 300:
            response["ETag"] = etag_of(response.data)
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


class ConfigViewSet(ETagged, ManagementApi, viewsets.ModelViewSet):
    """A configuration resource: writes in one transaction, ETag on every object, If-Match on
    every change."""

    lookup_field = "name"
    lookup_value_regex = _NAME

    def get_object(self) -> Any:
        if self.request.method in SAFE_METHODS:
            return super().get_object()
        # A change locks its row until it commits (writes run in a transaction): a concurrent
        # change waits, then compares its If-Match with the ETag of what was just saved.
        queryset = self.filter_queryset(self.get_queryset()).select_for_update(of=("self",))
        lookup = self.lookup_url_kwarg or self.lookup_field
        instance = get_object_or_404(queryset, **{self.lookup_field: self.kwargs[lookup]})
        self.check_object_permissions(self.request, instance)
        require_current(self.request, etag_of(self.get_serializer(instance).data))
        return instance

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with transaction.atomic():
            return super().create(request, *args, **kwargs)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with transaction.atomic():
            return super().update(request, *args, **kwargs)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            with transaction.atomic():
                return super().destroy(request, *args, **kwargs)
        except ProtectedError as exc:
            users = sorted({str(obj) for obj in exc.protected_objects})[:10]
            raise InUse(f"Still used by: {', '.join(users)}.") from None


@filters("enabled", "search")
class ServiceViewSet(ConfigViewSet):
    """Services with their targets. Filters: ?enabled=true|false, ?search= (name contains)."""

    serializer_class = serializers.ServiceSerializer

    def get_queryset(self) -> QuerySet[Service]:
        queryset = Service.objects.prefetch_related("targets").order_by("name")
        return _filter_common(self.request, queryset)


@filters("service", "policy", "tier", "enabled", "search")
class RouteViewSet(ConfigViewSet):
    """Routes. Filters: ?service=, ?policy=, ?tier=, ?enabled=, ?search= (name or path)."""

    serializer_class = serializers.RouteSerializer

    def get_queryset(self) -> QuerySet[Route]:
        queryset = Route.objects.select_related("service", "role_policy", "rate_limit_tier")
        params = self.request.query_params
        for param, field in (
            ("service", "service__name"),
            ("policy", "role_policy__name"),
            ("tier", "rate_limit_tier__name"),
        ):
            if params.get(param):
                queryset = queryset.filter(**{field: params[param]})
        if params.get("search"):
            queryset = queryset.filter(
                Q(name__icontains=params["search"]) | Q(path__icontains=params["search"])
            )
        return _filter_common(self.request, queryset.order_by("name"), search=False)

    @extend_schema(
        request=None,
        responses={200: serializers.CachePurgeSerializer},
        description="Purge the route's cached answers on every gateway instance: bumps its "
        "cache_generation, which publishes a new configuration version and records a history "
        "entry naming the caller. Needs the change permission on routes.",
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="purge-cache",
        permission_classes=[ChangePermission],
    )
    def purge_cache(self, request: Request, name: str | None = None) -> Response:
        route = get_object_or_404(Route.objects.all(), name=name)
        self.check_object_permissions(request, route)
        generation = purge_route_cache(route)
        data = serializers.CachePurgeSerializer(
            {"route": route.name, "cache_generation": generation}
        ).data
        return Response(data)


@filters("kind", "role", "search")
class PolicyViewSet(ConfigViewSet):
    """Role policies, their roles by name. Filters: ?kind=, ?role=, ?search=."""

    serializer_class = serializers.PolicySerializer

    def get_queryset(self) -> QuerySet[RolePolicy]:
        queryset = RolePolicy.objects.prefetch_related("roles").order_by("name")
        params = self.request.query_params
        if params.get("kind"):
            queryset = queryset.filter(kind=params["kind"])
        if params.get("role"):
            queryset = queryset.filter(roles__name=params["role"]).distinct()
        return _filter_common(self.request, queryset)


@filters("key", "search")
class TierViewSet(ConfigViewSet):
    """Rate-limit tiers. Filters: ?key=, ?search=."""

    serializer_class = serializers.TierSerializer

    def get_queryset(self) -> QuerySet[RateLimitTier]:
        queryset = RateLimitTier.objects.order_by("name")
        if self.request.query_params.get("key"):
            queryset = queryset.filter(key=self.request.query_params["key"])
        return _filter_common(self.request, queryset)


class DefaultsViewSet(
    ETagged,
    ManagementApi,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """The gateway-wide edge settings: one object, read and changed in place (never created nor
    deleted: until first saved it holds the built-in values). ETag and If-Match as for every
    configuration object."""

    serializer_class = serializers.DefaultsSerializer
    queryset = GatewayDefaults.objects.all()  # the model whose permissions apply
    pagination_class = None

    def get_object(self) -> GatewayDefaults:
        if self.request.method in SAFE_METHODS:
            current = GatewayDefaults.current()  # reading writes nothing
            self.check_object_permissions(self.request, current)
            return current
        # As ConfigViewSet: the row is locked until the change commits, so a concurrent change
        # waits and then compares its If-Match with what was just saved.
        GatewayDefaults.objects.get_or_create(pk=1)
        defaults = GatewayDefaults.objects.select_for_update().get(pk=1)
        self.check_object_permissions(self.request, defaults)
        require_current(self.request, etag_of(self.get_serializer(defaults).data))
        return defaults

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with transaction.atomic():
            return super().update(request, *args, **kwargs)


def _filter_common(request: Request, queryset: QuerySet[Any], *, search: bool = True) -> Any:
    params = request.query_params
    if search and params.get("search"):
        queryset = queryset.filter(name__icontains=params["search"])
    enabled = params.get("enabled")
    if enabled is not None and hasattr(queryset.model, "enabled"):
        if enabled not in {"true", "false"}:
            raise ValidationError({"enabled": "Use true or false."})
        queryset = queryset.filter(enabled=enabled == "true")
    return queryset


@filters("owner", "active")
class ApiKeyViewSet(ConfigViewSet):
    """API keys by prefix. Creating one answers its secret once; DELETE revokes it (the row
    stays, for the audit trail). Filters: ?owner= (username), ?active=true|false."""

    serializer_class = ApiKeySerializer
    lookup_field = "prefix"
    lookup_value_regex = r"[0-9a-f]+"

    def get_queryset(self) -> QuerySet[ApiKey]:
        queryset = ApiKey.objects.select_related("owner").order_by("-created_at", "prefix")
        params = self.request.query_params
        if params.get("owner"):
            queryset = queryset.filter(owner__username=params["owner"])
        active = params.get("active")
        if active in {"true", "false"}:
            revoked = Q(revoked_at__isnull=False)
            queryset = queryset.exclude(revoked) if active == "true" else queryset.filter(revoked)
        return queryset

    def perform_destroy(self, instance: ApiKey) -> None:
        api_key_revoke(api_key=instance)


@filters("route", "outcome", "caller", "method", "status", "request_id", "since", "until")
class AuditEntryViewSet(ETagged, ManagementApi, viewsets.ReadOnlyModelViewSet):
    """The audit trail, newest first. Filters: ?route=, ?outcome=allowed|denied, ?caller= (user
    id, email or key prefix), ?method=, ?status=, ?since= and ?until= (ISO date or date-time)."""

    serializer_class = AuditEntrySerializer

    def get_queryset(self) -> QuerySet[AuditEntry]:
        queryset = AuditEntry.objects.order_by("-created_at", "-id")
        params = self.request.query_params
        for param in ("route", "outcome", "method", "request_id"):
            if params.get(param):
                queryset = queryset.filter(**{param: params[param]})
        if params.get("status"):
            raw = params["status"]
            if not (raw.isascii() and raw.isdigit() and len(raw) <= 3):
                raise ValidationError({"status": "Use an HTTP status, e.g. 403."})
            queryset = queryset.filter(status=int(params["status"]))
        if caller := params.get("caller"):
            queryset = queryset.filter(
                Q(caller_id=caller) | Q(caller_email=caller) | Q(key_prefix=caller)
            )
        if since := query_datetime(self.request, "since"):
            queryset = queryset.filter(created_at__gte=since)
        if until := query_datetime(self.request, "until", end_of_day=True):
            queryset = queryset.filter(created_at__lte=until)
        return queryset
