"""The control plane: services, targets, routes, role policies, rate-limit tiers and the
gateway-wide defaults.

Every save publishes a new configuration version (routing.signals), served by running gateways
within about a second.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction
from django.db.models import Count, Q, QuerySet
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from audit.admin import ConfigChangeAdmin
from routing import dataplane
from routing.cache_purge import purge_route_cache
from routing.config.holder import holder
from routing.config.spec import ServiceSpec
from routing.models import (
    ROUTE_EDGE_FIELDS,
    ROUTE_REALTIME_FIELDS,
    GatewayDefaults,
    RateLimitTier,
    RolePolicy,
    Route,
    RouteTierOverride,
    Service,
    Target,
)
from routing.observe import traffic_stats
from routing.observe.service_health import service_report
from routing.rules import (
    policy_roles_problem,
    route_backends_problem,
    route_service_problem,
    service_upstream_problem,
)

logger = logging.getLogger("portier.traffic")

# Upstreams are mostly plain http inside a network; Django 6 would assume https otherwise.
URL_AS_HTTP = {models.URLField: {"assume_scheme": "http"}}


class JsonTextField(forms.JSONField):
    """A JSON column as a person reads and writes it: indented, in monospace. An empty box is
    the column's empty value: null (inherit, or none) where the column allows it, else its
    default ({} or []), so clearing a box never fails with "cannot be null"."""

    def __init__(self, *, blank_means: Any = None, **kwargs: Any) -> None:
        self.blank_means = blank_means
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        if not self.disabled and value in self.empty_values:
            return copy.deepcopy(self.blank_means)
        return super().to_python(value)

    def prepare_value(self, value: Any) -> Any:
        if value is None and self.blank_means is None:
            return ""  # "Empty: the gateway-wide setting", as the help texts say
        if isinstance(value, InvalidJSONInput):  # what was typed, shown again with its error
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


def json_textarea() -> forms.Textarea:
    return forms.Textarea(
        attrs={
            "rows": 8,
            "cols": 80,
            "spellcheck": "false",
            "class": "vLargeTextField",
            "style": "font-family: monospace",
        }
    )


class JsonAsText:
    """Every JSON column of the model edited as indented JSON text (JsonTextField)."""

    def formfield_for_dbfield(
        self, db_field: models.Field[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if isinstance(db_field, models.JSONField):
            kwargs.setdefault("form_class", JsonTextField)
            kwargs.setdefault("widget", json_textarea())
            kwargs.setdefault("blank_means", None if db_field.null else db_field.get_default())
        return super().formfield_for_dbfield(db_field, request, **kwargs)  # type: ignore[misc]


class TargetFormSet(forms.BaseInlineFormSet):
    """The service page's targets, checked against the service as it is being saved (the
    formset's instance carries the posted enabled / allow registration values)."""

    def clean(self) -> None:
        super().clean()
        service = self.instance
        if any(self.errors):
            return
        problem = service_upstream_problem(
            enabled=service.enabled,
            allow_registration=service.allow_registration,
            has_enabled_target=any(self._serves(form) for form in self.forms),
        )
        if problem:
            raise ValidationError(problem, code="no_upstream")

    def _serves(self, form: forms.Form) -> bool:
        data = getattr(form, "cleaned_data", {})
        removed = self.can_delete and self._should_delete_form(form)
        return bool(data.get("url") and data.get("enabled") and not removed)


class TargetInline(admin.TabularInline):
    model = Target
    formset = TargetFormSet
    extra = 1
    fields = ("url", "weight", "enabled")
    formfield_overrides = URL_AS_HTTP


TARGET_COLUMNS = (
    "source",
    "URL",
    "instance id",
    "weight",
    "state",
    "circuit",
    "last check",
    "latency (ms)",
    "error",
    "in flight",
    "metadata",
)


def served_service(name: str) -> ServiceSpec | None:
    """The service as this process serves it: the snapshot's spec, with the health board behind
    it (both started on first use, as /health/services does)."""
    dataplane.start()
    return holder.current.services.get(name)


def _blank(value: Any) -> Any:
    return "-" if value is None or value == "" else value


def health_verdict(targets: list[dict[str, Any]]) -> tuple[str, str, str]:
    """(text, colour, explanation) of a service's badge from its targets' report
    (routing.observe.service_health): red when a target is out of rotation (unhealthy, or its
    circuit open), green when every one passed its active check, grey otherwise (no targets, no
    active checks, or not probed yet)."""
    total = len(targets)
    if not total:
        return "unknown", "muted", "No enabled targets and no registered instances."
    available = sum(1 for t in targets if t["available"])
    if available < total:
        return f"{available}/{total} healthy", "bad", "Targets out of rotation: see the page."
    if all(t["state"] == "healthy" for t in targets):
        return f"{total}/{total} healthy", "good", "Every target passed its active check."
    return "unknown", "muted", f"{total} in rotation, not (yet) checked by active probes."


def _badge(text: str, colour: str, title: str) -> SafeString:
    return format_html('<span class="portier-badge {}" title="{}">{}</span>', colour, title, text)


# The service page's fieldsets after the targets: folded, each named for what it tunes.
ADVANCED = ("collapse",)


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    """The targets and their live health come first (the page's template puts the targets'
    inline right after them); the tuning is folded below."""

    change_form_template = "admin/routing/service/change_form.html"
    list_display = (
        "name",
        "enabled",
        "health_badge",
        "active_targets",
        "balancing",
        "route_count",
        "updated_at",
    )
    list_filter = ("enabled", "balancing", "allow_registration")
    search_fields = ("name", "description", "targets__url")
    readonly_fields = ("served_targets", "created_at", "updated_at")
    inlines = (TargetInline,)
    fieldsets = (
        (None, {"fields": ("name", "description", "enabled")}),
        (
            "Targets in service",
            {
                "fields": ("served_targets",),
                "description": "Static targets and registered instances with their health, as "
                "this gateway process balances on them (each process keeps its own view, "
                "refreshed about every second). Static targets are edited below.",
            },
        ),
        ("Balancing", {"classes": ADVANCED, "fields": ("balancing", "hash_on", "hash_header")}),
        (
            "Active health checks",
            {
                "classes": ADVANCED,
                "fields": (
                    "health_path",
                    "health_interval",
                    "health_timeout",
                    "healthy_threshold",
                    "unhealthy_threshold",
                ),
            },
        ),
        (
            "Circuit breaker (passive health checks)",
            {
                "classes": ADVANCED,
                "fields": ("breaker_failures", "breaker_statuses", "breaker_cooldown"),
            },
        ),
        (
            "Retries and timeouts",
            {
                "classes": ADVANCED,
                "fields": (
                    "connect_timeout",
                    "read_timeout",
                    "write_timeout",
                    "total_timeout",
                    "retries",
                    "retry_statuses",
                    "max_in_flight",
                ),
            },
        ),
        ("Registration", {"classes": ADVANCED, "fields": ("allow_registration",)}),
        ("History", {"classes": ADVANCED, "fields": ("created_at", "updated_at")}),
    )
    # How many fieldsets come before the targets' inline (the template reads it).
    fieldsets_before_targets = 2

    def get_queryset(self, request: HttpRequest) -> QuerySet[Service]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                _active_targets=Count("targets", filter=Q(targets__enabled=True), distinct=True),
                _routes=Count("routes", distinct=True),
            )
            # A query with GROUP BY drops Meta.ordering: the route form's service search pages
            # through this queryset.
            .order_by("name")
        )

    @admin.display(description="enabled targets", ordering="_active_targets")
    def active_targets(self, obj: Service) -> int:
        return obj._active_targets  # type: ignore[attr-defined]

    @admin.display(description="routes", ordering="_routes")
    def route_count(self, obj: Service) -> int:
        return obj._routes  # type: ignore[attr-defined]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        dataplane.start()  # the snapshot and the health board the badges read
        return super().changelist_view(request, extra_context)

    @admin.display(description="health")
    def health_badge(self, obj: Service) -> SafeString:
        """Green when every target is healthy, red when one is out of rotation, grey when not
        known: from this process's snapshot and health board, so no query and no cache call."""
        spec = holder.current.services.get(obj.name)
        if spec is None:
            return _badge("unknown", "muted", "Not served: disabled, or saved a moment ago.")
        return _badge(*health_verdict(service_report(spec)["targets"]))

    @admin.display(description="targets and instances")
    def served_targets(self, obj: Service) -> SafeString | str:
        if obj.pk is None:
            return "Shown once the service is saved."
        spec = served_service(obj.name)
        if spec is None:
            return (
                "This service is not in the configuration this process serves: it is disabled, "
                "or was saved a moment ago (reload in a second)."
            )
        report = service_report(spec)
        targets = report["targets"]
        if not targets:
            return "No enabled targets and no registered instances: requests get 503."
        available = sum(1 for t in targets if t["available"])
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    t["source"],
                    t["url"],
                    _blank(t["instance_id"]),
                    t["weight"],
                    t["state"],
                    t["circuit"],
                    _blank(t["last_check"]),
                    _blank(t["latency_ms"]),
                    _blank(t["error"]),
                    t["in_flight"],
                    json.dumps(t["metadata"], sort_keys=True) if t["metadata"] else "-",
                )
                for t in targets
            ),
        )
        return format_html(
            '<p>{}: {} of {} available.</p><table class="portier-targets"><thead><tr>{}</tr>'
            "</thead><tbody>{}</tbody></table>",
            report["status"].capitalize(),
            available,
            len(targets),
            format_html_join("", "<th>{}</th>", ((c,) for c in TARGET_COLUMNS)),
            rows,
        )


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    list_display = ("url", "service", "weight", "enabled")
    formfield_overrides = URL_AS_HTTP
    list_filter = ("enabled", "service")
    search_fields = ("url", "service__name")
    list_select_related = ("service",)


class RouteTierOverrideInline(admin.TabularInline):
    model = RouteTierOverride
    extra = 0
    autocomplete_fields = ("role",)
    verbose_name = "rate-limit tier for a role"
    verbose_name_plural = "rate-limit tiers by role (a caller with several gets the most generous)"


class RouteForm(forms.ModelForm):
    """The route page, and the route list's editable `enabled` column (the admin builds it
    from the fieldsets, or from list_editable)."""

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "backends" in self.fields:
            problem = route_backends_problem(data.get("backends"))
            if problem:
                self.add_error("backends", problem)
        if "service" in self.fields:
            service = data.get("service")
        elif "enabled" in self.changed_data:
            # The list's form has only `enabled`: the service is the route's as saved.
            service = self.instance.service
        else:
            return data  # a row of the list left as it was: no query for it
        enabled = data.get("enabled") if "enabled" in self.fields else self.instance.enabled
        # A disabled route, or one on a disabled service, is not served: nothing to break.
        problem = service and route_service_problem(route_enabled=bool(enabled), service=service)
        if problem:
            self.add_error("service" if "service" in self.fields else "enabled", problem)
        return data


EDGE_FIELDSET = "Edge: transforms, CORS, security headers, HTTPS, IP lists, compression"
CACHE_FIELDSET = "Response cache"


def purge_message(count: int) -> str:
    routes = "1 route" if count == 1 else f"{count} routes"
    return (
        f"Purged the cached answers of {routes}: every gateway instance stops serving them as "
        "soon as it loads the new configuration version."
    )


@admin.register(Route)
class RouteAdmin(JsonAsText, admin.ModelAdmin):
    form = RouteForm
    # Narrow enough for 1280 px beside the filters: hosts ride in `match`, priority on the page.
    list_display = (
        "name",
        "match",
        "methods_display",
        "service",
        "policy",
        "tier",
        "enabled",
    )
    list_filter = ("enabled", "match_type", "service", "role_policy", "rate_limit_tier")
    search_fields = ("name", "path", "hosts", "service__name")
    list_select_related = ("service", "role_policy", "rate_limit_tier")
    list_editable = ("enabled",)
    readonly_fields = ("cache_generation", "cache_hit_ratio", "created_at", "updated_at")
    autocomplete_fields = ("service",)
    inlines = (RouteTierOverrideInline,)
    actions = ("purge_cached_answers",)
    change_form_template = "admin/routing/route/change_form.html"
    fieldsets = (
        (None, {"fields": ("name", "service", "enabled", "priority")}),
        ("Match", {"fields": ("match_type", "path", "methods", "hosts", "header_matches")}),
        (
            "Forwarding",
            {
                "fields": (
                    "strip_prefix",
                    "rewrite",
                    "preserve_host",
                    "forward_authorization",
                    "retry_unsafe_methods",
                    "stream_uploads",
                    "max_body_bytes",
                )
            },
        ),
        ("Access", {"fields": ("role_policy", "rate_limit_tier", "audit")}),
        (
            EDGE_FIELDSET,
            {
                "classes": ("collapse",),
                "description": "Empty CORS or security headers, and Unknown, take the "
                "gateway-wide setting (Routing: Gateway defaults). The deny list is checked "
                "before the allow list.",
                "fields": ROUTE_EDGE_FIELDS,
            },
        ),
        (
            CACHE_FIELDSET,
            {
                "description": "Empty: answers are not cached. Purging (the button above, or "
                "the route list's action) bumps the generation: answers cached before are never "
                "served again.",
                "fields": ("cache", "cache_generation", "cache_hit_ratio"),
            },
        ),
        (
            "WebSocket and composite",
            {
                "classes": ("collapse",),
                "description": "WebSocket: upgrades meet the same identity, policy, limit and "
                "audit checks, then messages are relayed both ways. Backends: a composite "
                "route calls those services at once and answers their JSON merged.",
                "fields": ROUTE_REALTIME_FIELDS,
            },
        ),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    def get_changelist_form(self, request: HttpRequest, **kwargs: Any) -> type[forms.ModelForm]:
        # Enabling a route from the list must be checked like enabling it on its page.
        return super().get_changelist_form(request, form=RouteForm, **kwargs)

    @admin.display(description="match", ordering="path")
    def match(self, obj: Route) -> str:
        match = f"{obj.get_match_type_display().split(' ')[0].lower()} {obj.path}"
        return f"{match} on {obj.hosts}" if obj.hosts else match

    @admin.display(description="policy", ordering="role_policy__name")
    def policy(self, obj: Route) -> str:
        return obj.role_policy.name if obj.role_policy else "public"  # the kind is a filter

    @admin.display(description="tier", ordering="rate_limit_tier__name")
    def tier(self, obj: Route) -> str:
        return str(obj.rate_limit_tier) if obj.rate_limit_tier else "-"

    @admin.display(description="methods")
    def methods_display(self, obj: Route) -> str:
        return obj.methods or "any"

    @admin.display(description="Cache hit ratio (last 15 min)")
    def cache_hit_ratio(self, obj: Route) -> str:
        """From the traffic summary in the cache (routing.observe.traffic_stats), every gateway
        process's counts summed: never from the database."""
        if obj.pk is None:
            return "Shown once the route is saved."
        try:
            found = traffic_stats.summary(routes=[obj.name], window=traffic_stats.CACHE_WINDOW)
        except Exception as exc:  # the cache is down: the page still opens
            logger.warning("traffic summary unavailable: %s", exc)
            return "Unknown: the cache did not answer."
        row = next((r for r in found.routes if r.route == obj.name), None)
        if row is None or row.cache_hit_ratio is None:
            return "No cache lookups in the last 15 minutes."
        return f"{row.cache_hit_ratio:.1f}% ({row.cache_hits} hits of {row.cache_lookups} lookups)"

    @admin.action(description="Purge cached answers", permissions=["change"])
    def purge_cached_answers(self, request: HttpRequest, queryset: QuerySet[Route]) -> None:
        count = 0
        with transaction.atomic():  # one configuration version for them all
            for route in queryset:
                purge_route_cache(route)
                count += 1
        self.message_user(request, purge_message(count), messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        purge = path(
            "<int:pk>/purge-cache/",
            self.admin_site.admin_view(require_POST(self.purge_cache_view)),
            name="routing_route_purge_cache",
        )
        return [purge, *super().get_urls()]

    def purge_cache_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The button on a route's page: POST only (a link could be followed by accident)."""
        route = get_object_or_404(Route, pk=pk)
        if not self.has_change_permission(request, route):
            raise PermissionDenied
        purge_route_cache(route)
        self.message_user(request, purge_message(1), messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:routing_route_change", args=[pk]))


class RolePolicyForm(forms.ModelForm):
    class Meta:
        model = RolePolicy
        fields = ("name", "kind", "roles", "report_only", "description")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        problem = policy_roles_problem(data.get("kind"), data.get("roles") or [])
        if problem:
            self.add_error("roles", problem)
        return data


@admin.register(RolePolicy)
class RolePolicyAdmin(admin.ModelAdmin):
    form = RolePolicyForm
    list_display = ("name", "kind", "roles_display", "mode", "route_count")
    list_filter = ("kind", "report_only")
    search_fields = ("name", "description", "roles__name")
    filter_horizontal = ("roles",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[RolePolicy]:
        return (
            super()
            .get_queryset(request)
            .prefetch_related("roles")
            .annotate(_routes=Count("routes", distinct=True))
            .order_by("name")  # GROUP BY drops Meta.ordering
        )

    @admin.display(description="roles")
    def roles_display(self, obj: RolePolicy) -> str:
        return ", ".join(g.name for g in obj.roles.all()) or "-"

    @admin.display(description="mode", ordering="report_only")
    def mode(self, obj: RolePolicy) -> str:
        return "report-only" if obj.report_only else "enforced"

    @admin.display(description="routes", ordering="_routes")
    def route_count(self, obj: RolePolicy) -> int:
        return obj._routes  # type: ignore[attr-defined]


@admin.register(RateLimitTier)
class RateLimitTierAdmin(admin.ModelAdmin):
    list_display = ("name", "rate", "key", "header_name", "per_method", "mode", "route_count")
    list_filter = ("key", "per_method", "report_only")
    search_fields = ("name", "description")

    def get_queryset(self, request: HttpRequest) -> QuerySet[RateLimitTier]:
        routes = Count("routes", distinct=True)
        return super().get_queryset(request).annotate(_routes=routes).order_by("name")

    @admin.display(description="mode", ordering="report_only")
    def mode(self, obj: RateLimitTier) -> str:
        return "report-only" if obj.report_only else "enforced"

    @admin.display(description="routes", ordering="_routes")
    def route_count(self, obj: RateLimitTier) -> int:
        return obj._routes  # type: ignore[attr-defined]


@admin.register(GatewayDefaults)
class GatewayDefaultsAdmin(JsonAsText, admin.ModelAdmin):
    """One row, edited in place: the list opens it (or, before it was ever saved, the add page
    with the built-in values: looking writes nothing), and it is never added twice nor deleted
    (the gateway always has defaults)."""

    fieldsets = (
        (
            "CORS and security headers",
            {
                "description": "What every route does unless it says otherwise, and what the "
                "gateway's own endpoints and unmatched requests get. Saving publishes a new "
                "configuration version.",
                "fields": ("cors", "security_headers"),
            },
        ),
        (
            "HTTPS and compression",
            {"fields": ("https_redirect", "compression", "compression_min_bytes")},
        ),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not GatewayDefaults.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        opts = self.opts
        defaults = GatewayDefaults.objects.filter(pk=1).first()
        if defaults is None:  # never saved: the add page shows the built-in values, unwritten
            if not self.has_add_permission(request):
                raise PermissionDenied
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[defaults.pk])
        return HttpResponseRedirect(url)


# --- Configuration history (read by auditors; the records live in the audit app) ---------


@admin.register(Service.history.model)
class ServiceChangeAdmin(ConfigChangeAdmin):
    search_fields = ("name", "history_user__username")


@admin.register(Target.history.model)
class TargetChangeAdmin(ConfigChangeAdmin):
    search_fields = ("url", "history_user__username")


@admin.register(Route.history.model)
class RouteChangeAdmin(ConfigChangeAdmin):
    search_fields = ("name", "path", "history_user__username")


@admin.register(RolePolicy.history.model)
class RolePolicyChangeAdmin(ConfigChangeAdmin):
    search_fields = ("name", "history_user__username")


@admin.register(RateLimitTier.history.model)
class RateLimitTierChangeAdmin(ConfigChangeAdmin):
    search_fields = ("name", "history_user__username")


@admin.register(GatewayDefaults.history.model)
class GatewayDefaultsChangeAdmin(ConfigChangeAdmin):
    search_fields = ("history_user__username",)


@admin.register(RouteTierOverride.history.model)
class RouteTierOverrideChangeAdmin(ConfigChangeAdmin):
    search_fields = ("route__name", "history_user__username")

    def object_label(self, record: Any) -> str:
        # From the joined rows, not the rebuilt object (whose __str__ would query twice).
        return f"{record.route} / {record.role} -> {record.tier}"


# The configuration timeline, the route tester and the user page's reachable routes register
# themselves; the index's order is installed last, so it places the tester's page too.
from routing import admin_index, admin_tester, admin_timeline, admin_users  # noqa: E402, F401

admin_index.install(admin.site)
