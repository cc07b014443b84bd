"""Configuration history through the management API: simple_history's records of the routing
models and API keys — who changed what, when, and each changed field's value before and after
(computed as audit.admin.ConfigChangeAdmin computes it for the admin's history pages).

    GET /admin/api/history/<kind>/   kind: services, targets, routes, policies, tiers,
                                     tier-overrides, defaults, api-keys

Filters: ?object= (the object's name, or its id), ?user= (username), ?action=created|changed|
deleted, ?since= and ?until= (ISO date or date-time). Newest first.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import ApiKey
from routing.api.views import ManagementApi, query_datetime
from routing.models import (
    GatewayDefaults,
    RateLimitTier,
    RolePolicy,
    Route,
    RouteTierOverride,
    Service,
    Target,
)

__all__ = ["HISTORY_KINDS", "HistoryView"]

HISTORY_KINDS: dict[str, type[models.Model]] = {
    "services": Service,
    "targets": Target,
    "routes": Route,
    "policies": RolePolicy,
    "tiers": RateLimitTier,
    "tier-overrides": RouteTierOverride,
    "defaults": GatewayDefaults,  # one object: ?object=1
    "api-keys": ApiKey,
}
_ACTIONS = {"+": "created", "~": "changed", "-": "deleted"}
# Bookkeeping that changes with every save (or with use) and says nothing about configuration.
_NOT_DIFFED = {"created_at", "updated_at", "last_used_at"}


def _value(record: Any, field: models.Field[Any, Any]) -> Any:
    """A tracked field's value as JSON: a related object by its name, as the admin shows it."""
    value = getattr(record, field.attname)
    if isinstance(field, models.ForeignKey) and value is not None:
        try:
            related = getattr(record, field.name)
        except ObjectDoesNotExist:
            return f"deleted #{value}"
        return str(getattr(related, "name", None) or getattr(related, "username", None) or related)
    if isinstance(value, (str, int, float, bool, dict, list)) or value is None:
        return value
    return str(value)


def record_values(record: Any) -> dict[str, Any]:
    """Every tracked field of one version, many-to-many ones (a policy's roles) by name."""
    values = {
        field.name: _value(record, field)
        for field in record.tracked_fields
        if field.name not in _NOT_DIFFED
    }
    for field in record._history_m2m_fields:
        key = field.m2m_reverse_field_name()
        rows = getattr(record, field.name).select_related(key)
        values[field.name] = sorted(str(getattr(row, key)) for row in rows)
    return values


def _with_related(history: Any) -> QuerySet[Any]:
    """Records with the objects they refer to joined: named in one query, not one per row."""
    related = [f.name for f in history.tracked_fields if isinstance(f, models.ForeignKey)]
    return history._default_manager.select_related(*related)


class HistoryRecordSerializer(serializers.Serializer):
    """One change: who, when, what, and the changed fields' values before and after."""

    history_id = serializers.IntegerField()
    object_id = serializers.IntegerField()
    object = serializers.CharField(help_text="The object as it was (its name).")
    action = serializers.ChoiceField(choices=list(_ACTIONS.values()))
    at = serializers.DateTimeField()
    user = serializers.CharField(allow_null=True, help_text="Who made the change, if known.")
    changed = serializers.ListField(child=serializers.CharField())
    before = serializers.DictField(allow_null=True)
    after = serializers.DictField(allow_null=True)

    def to_representation(self, record: Any) -> dict[str, Any]:
        values = record_values(record)
        before: dict[str, Any] | None
        after: dict[str, Any] | None
        if record.history_type == "-":
            before, after, changed = values, None, []
        elif record.history_type == "+" or getattr(record, "_prev", None) is None:
            after = {
                name: value for name, value in values.items() if value not in (None, "", {}, [])
            }
            before, changed = None, sorted(after)
        else:
            previous = record_values(record._prev)
            changed = sorted(name for name in values if values[name] != previous.get(name))
            before = {name: previous.get(name) for name in changed}
            after = {name: values[name] for name in changed}
        return {
            "history_id": record.history_id,
            "object_id": record.id,
            "object": str(getattr(record, "name", None) or record.history_object),
            "action": _ACTIONS.get(record.history_type, record.history_type),
            "at": serializers.DateTimeField().to_representation(record.history_date),
            "user": record.history_user.get_username() if record.history_user else None,
            "changed": changed,
            "before": before,
            "after": after,
        }


@extend_schema_view(
    get=extend_schema(
        summary="The configuration history of one kind of object",
        parameters=[
            OpenApiParameter("kind", str, OpenApiParameter.PATH, enum=list(HISTORY_KINDS)),
            *(OpenApiParameter(name, str) for name in ("object", "user", "since", "until")),
            OpenApiParameter("action", str, enum=list(_ACTIONS.values())),
        ],
    )
)
class HistoryView(ManagementApi, ListAPIView):
    """Who changed one kind of configuration object, when, and each changed field before and
    after; newest first."""

    serializer_class = HistoryRecordSerializer

    def history_model(self) -> Any:
        model = HISTORY_KINDS.get(self.kwargs.get("kind", ""))
        if model is None:
            raise Http404
        return model.history.model  # type: ignore[attr-defined]

    def get_queryset(self) -> QuerySet[Any]:
        history = self.history_model()
        queryset = _with_related(history).select_related("history_user")
        params = self.request.query_params
        if target := params.get("object"):
            by_name = "name" in {f.name for f in history.tracked_fields}
            match = models.Q(name=target) if by_name else models.Q(pk__in=[])
            if target.isascii() and target.isdigit() and len(target) <= 18:
                match |= models.Q(id=int(target))
            queryset = queryset.filter(match)
        if params.get("user"):
            queryset = queryset.filter(history_user__username=params["user"])
        if action := params.get("action"):
            codes = {name: code for code, name in _ACTIONS.items()}
            if action not in codes:
                raise serializers.ValidationError({"action": "Use created, changed or deleted."})
            queryset = queryset.filter(history_type=codes[action])
        if since := query_datetime(self.request, "since"):
            queryset = queryset.filter(history_date__gte=since)
        if until := query_datetime(self.request, "until", end_of_day=True):
            queryset = queryset.filter(history_date__lte=until)
        earlier = history._default_manager.filter(
            id=models.OuterRef("id"), history_date__lt=models.OuterRef("history_date")
        ).order_by("-history_date", "-history_id")
        return queryset.annotate(
            _prev_id=models.Subquery(earlier.values("history_id")[:1])
        ).order_by("-history_date", "-history_id")

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        records = list(page or [])
        wanted = {r._prev_id for r in records if r._prev_id is not None}
        previous = _with_related(self.history_model()).in_bulk(wanted)
        for record in records:
            record._prev = previous.get(record._prev_id)
        return self.get_paginated_response(self.get_serializer(records, many=True).data)
