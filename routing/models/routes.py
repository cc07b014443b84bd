"""Routes: which requests go to which service, with their edge, cache, WebSocket and composite
options, and their per-role tier overrides."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils.html import escape
from simple_history.models import HistoricalRecords

from routing.config.cache import cache_errors
from routing.config.composite import backend_errors
from routing.config.edge import cors_errors, ip_list_errors, security_errors
from routing.config.transforms import template_groups, transform_errors
from routing.models.access import RateLimitTier, RolePolicy
from routing.models.services import HEADER_NAME_RE, Service, split_csv
from routing.proxy.paths import PathRejected, is_reserved_path, normalize_path

# TRACE and CONNECT reach an upstream only through a route that names them (stages/match.py).
# A route's edge options (routing.config.edge, routing.config.transforms), as the admin's
# fieldset and the management API list them.
ROUTE_EDGE_FIELDS = (
    "transform",
    "cors",
    "security_headers",
    "https_redirect",
    "compression",
    "ip_allow",
    "ip_deny",
)
# A route's WebSocket and composite options (routing.proxy.websocket, routing.config.composite),
# as the admin's fieldset and the management API list them.
ROUTE_REALTIME_FIELDS = (
    "websocket",
    "websocket_idle_timeout",
    "websocket_max_connections",
    "backends",
)
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
_REGEX_META = re.compile(r"[\\.^$*+?{}\[\]|()]")
_HOST_RE = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


class Route(models.Model):
    """Which requests go to which service: host, method, path and header conditions."""

    class MatchType(models.TextChoices):
        PREFIX = "prefix", "Prefix (whole segments)"
        EXACT = "exact", "Exact"
        REGEX = "regex", "Regular expression (full match)"

    name = models.SlugField(max_length=100, unique=True)
    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="routes")
    hosts = models.CharField(
        max_length=500,
        blank=True,
        help_text="Comma-separated hosts (api.example.com, *.example.com); empty = any host.",
    )
    methods = models.CharField(
        max_length=100, blank=True, help_text="Comma-separated methods (GET, POST); empty = any."
    )
    path = models.CharField(max_length=500, help_text="/api/users, or a regex for regex routes.")
    match_type = models.CharField(
        max_length=10, choices=MatchType.choices, default=MatchType.PREFIX
    )
    header_matches = models.JSONField(
        default=dict,
        blank=True,
        help_text='Headers that must be present with an exact value, e.g. {"X-Api-Version": "2"}.',
    )
    priority = models.IntegerField(
        default=0, help_text="Higher wins; among equal priorities the longest path wins."
    )
    strip_prefix = models.BooleanField(
        default=False, help_text="Remove the matched prefix before forwarding."
    )
    rewrite = models.CharField(
        max_length=500,
        blank=True,
        # The admin renders help text as HTML: escaped, the group reference shows as typed.
        help_text=escape(
            "Prefix/exact routes: the path put in place of the matched one. Regex routes: "
            r"a template using groups, e.g. /v2/\g<id>."
        ),
    )
    preserve_host = models.BooleanField(
        default=False, help_text="Send the client's Host header upstream instead of the target's."
    )
    audit = models.BooleanField(
        default=False,
        help_text="Write an audit row for every request (admin-only routes are always audited).",
    )
    retry_unsafe_methods = models.BooleanField(
        default=False,
        help_text="Retry POST and PATCH too (the upstream's handlers are idempotent). Bodies over "
        "64 KiB are streamed and never retried.",
    )
    forward_authorization = models.BooleanField(
        default=True,
        help_text="Pass the client's Authorization / X-API-Key headers on to the upstream.",
    )
    stream_uploads = models.BooleanField(
        default=False,
        help_text="Stream chunked request bodies to the upstream as they arrive. Off: bodies up "
        "to PORTIER_CHUNKED_BUFFER_BYTES (1 MiB) are read whole and sent with a Content-Length, "
        "which upstreams that only read Content-Length bodies need.",
    )
    max_body_bytes = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Largest request body in bytes (else 413); empty = PORTIER_MAX_BODY_BYTES "
        "(10 MiB by default).",
    )
    transform = models.JSONField(
        default=dict,
        blank=True,
        help_text='What the upstream receives and the client gets back, e.g. {"request": '
        '{"headers": {"set": {"X-Tenant": "acme"}, "remove": ["X-Debug"]}, "query": {"rename": '
        '{"q": "search"}}, "body": {"set": {"source": "gateway"}}}, "response": {"headers": '
        '{"remove": ["X-Internal"]}}}. Values may use $user_id, $email, $roles, $request_id, '
        "$client_ip, $route and a regex route's named groups as $path.NAME.",
    )
    cors = models.JSONField(
        null=True,
        blank=True,
        default=None,
        help_text="Empty: the gateway-wide CORS setting. false: no CORS on this route. Or this "
        'route\'s own, e.g. {"origins": ["https://app.example.com"], "origin_patterns": '
        '["https://*.example.com"], "credentials": true, "max_age": 600}.',
    )
    security_headers = models.JSONField(
        null=True,
        blank=True,
        default=None,
        help_text="Empty: the gateway-wide security headers. Or keys laid over them, e.g. "
        '{"override": true, "frame_options": "SAMEORIGIN"}.',
    )
    https_redirect = models.BooleanField(
        null=True,
        blank=True,
        default=None,
        help_text="Send plain-HTTP callers to HTTPS (308; 403 https_required for a request "
        "with a body). Unknown: the gateway-wide setting.",
    )
    compression = models.BooleanField(
        null=True,
        blank=True,
        default=None,
        help_text="Gzip or brotli answers the upstream did not compress. Unknown: the "
        "gateway-wide setting.",
    )
    cache = models.JSONField(
        null=True,
        blank=True,
        default=None,
        help_text='Empty: answers are not cached. Or e.g. {"ttl": 60, "vary_headers": '
        '["Accept-Language"], "vary_query": ["page", "size"], "per_user": false, '
        '"max_entry_bytes": 1048576, "stale_if_error": 300}: GET and HEAD answers shared by '
        "every instance through Redis.",
    )
    cache_generation = models.PositiveIntegerField(
        default=0,
        editable=False,
        help_text="Bumped by a purge: entries stored before it are never served again.",
    )
    ip_allow = models.JSONField(
        default=list,
        blank=True,
        help_text="Only these client addresses or networks may call the route, e.g. "
        '["10.0.0.0/8"]; empty = any (403 ip_forbidden otherwise).',
    )
    ip_deny = models.JSONField(
        default=list,
        blank=True,
        help_text="These client addresses or networks may not call the route (checked first).",
    )
    websocket = models.BooleanField(
        default=False,
        help_text="Accept WebSocket upgrades and relay their messages (after the same identity, "
        "policy, limit and audit checks as any request). Browsers may send the token as the "
        'subprotocols "bearer", TOKEN or as ?access_token=TOKEN.',
    )
    websocket_idle_timeout = models.FloatField(
        default=300.0,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds a WebSocket may stay silent both ways before both sides are closed "
        "(1001).",
    )
    websocket_max_connections = models.PositiveIntegerField(
        default=0,
        help_text="Most WebSocket connections open at once on this route, per gateway process "
        "(503 past it); 0 = no cap.",
    )
    backends = models.JSONField(
        null=True,
        blank=True,
        default=None,
        help_text="Empty: an ordinary route. Or a composite route calling several services and "
        'merging their JSON, e.g. [{"service": "users", "path": "/users/$user_id", "key": '
        '"user"}, {"service": "orders", "path": "/orders?user={user.id}", "key": "orders", '
        '"fields": ["id", "total"], "timeout": 2}].',
    )
    role_policy = models.ForeignKey(
        RolePolicy,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="routes",
        help_text="Empty means public.",
    )
    rate_limit_tier = models.ForeignKey(
        RateLimitTier, on_delete=models.PROTECT, null=True, blank=True, related_name="routes"
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(
        app="audit", verbose_name="route change", verbose_name_plural="route changes"
    )

    class Meta:
        ordering = ["-priority", "path"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Only a purge (routing.cache_purge) writes cache_generation: a form or document that
        # loaded the route before a purge must not write the older generation back, which
        # would make the purged entries reachable again.
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                f.name
                for f in self._meta.concrete_fields
                if not f.primary_key and f.name != "cache_generation"
            ]
        super().save(*args, **kwargs)

    def host_list(self) -> list[str]:
        return [h.lower() for h in split_csv(self.hosts)]

    def method_list(self) -> list[str]:
        return [m.upper() for m in split_csv(self.methods)]

    def clean(self) -> None:
        errors: dict[str, str] = {}
        self.path = self.path.strip()
        for host in self.host_list():
            if not _HOST_RE.match(host):
                errors["hosts"] = (
                    f"{host!r} is not a host name (use api.example.com or *.example.com)."
                )
        self.hosts = ", ".join(self.host_list())
        unknown = [m for m in self.method_list() if m not in HTTP_METHODS]
        if unknown:
            errors["methods"] = f"Unknown method(s): {', '.join(unknown)}."
        self.methods = ", ".join(self.method_list())
        if not isinstance(self.header_matches, dict) or not all(
            isinstance(k, str) and HEADER_NAME_RE.match(k) and isinstance(v, str)
            for k, v in self.header_matches.items()
        ):
            errors["header_matches"] = 'Use an object of header name to value: {"X-Env": "beta"}.'
        if self.match_type == self.MatchType.REGEX:
            errors.update(self._clean_regex())
        else:
            errors.update(self._clean_plain_path())
        errors.update(self._clean_edge())
        if errors:
            raise ValidationError(errors)

    def _clean_edge(self) -> dict[str, str]:
        problems = {
            "transform": transform_errors(
                self.transform, settings.PORTIER_IDENTITY_HEADER_PREFIXES
            ),
            "cors": cors_errors(self.cors, route=True),
            "security_headers": security_errors(self.security_headers),
            "ip_allow": ip_list_errors(self.ip_allow),
            "ip_deny": ip_list_errors(self.ip_deny),
            "cache": cache_errors(self.cache),
            "backends": self._backend_errors(),
        }
        if not problems["transform"]:
            groups = set(template_groups(self.transform))
            known: set[str] = set()
            if self.match_type == self.MatchType.REGEX:
                try:
                    known = set(re.compile(self.path).groupindex)
                except re.error:
                    known = groups
            problems["transform"] = [
                f"$path.{group}: the route's path has no named group {group!r}"
                + ("" if self.match_type == self.MatchType.REGEX else " (only regex routes do)")
                + "."
                for group in sorted(groups - known)
            ]
        return {field: " ".join(lines) for field, lines in problems.items() if lines}

    def _backend_errors(self) -> list[str]:
        if self.backends is None:
            return []
        groups: frozenset[str] = frozenset()
        if self.match_type == self.MatchType.REGEX:
            try:
                groups = frozenset(re.compile(self.path).groupindex)
            except re.error:
                groups = frozenset()
        errors = backend_errors(self.backends, groups)
        if self.websocket:
            errors.append(
                "A composite route answers GET and HEAD with merged JSON; it cannot also relay "
                "WebSockets. Turn WebSocket off or clear the backends."
            )
        if self.cache is not None:
            errors.append(
                "A composite route's answers are not cached; clear the cache settings or the "
                "backends."
            )
        return errors

    def _clean_regex(self) -> dict[str, str]:
        try:
            pattern = re.compile(self.path)
        except re.error as exc:
            return {"path": f"The regular expression does not compile: {exc}."}
        if self.strip_prefix:
            return {"strip_prefix": "Regex routes rewrite with a template instead."}
        # The pattern's literal start catches /admin/login/-style patterns the probes miss.
        literal = self.path.removeprefix("^")
        found = _REGEX_META.search(literal)
        literal = literal[: found.start()] if found else literal
        for reserved in settings.PORTIER_RESERVED_PATHS:
            if (
                pattern.fullmatch(reserved)
                or pattern.fullmatch(reserved + "/x")
                or literal == reserved
                or literal.startswith(reserved + "/")
            ):
                return {"path": f"This pattern would shadow the gateway's own {reserved} path."}
        if self.rewrite:
            if not self.rewrite.startswith("/"):
                return {"rewrite": "A rewrite path starts with /."}
            try:
                pattern.sub(self.rewrite, "")  # compiles the template: bad group refs raise here
            except (re.error, IndexError) as exc:
                return {"rewrite": f"The rewrite template is invalid: {exc}."}
        return {}

    def _clean_plain_path(self) -> dict[str, str]:
        if not self.path.startswith("/"):
            return {"path": "A path starts with /."}
        try:
            normal = normalize_path(
                self.path.encode(), allow_encoded_slashes=settings.PORTIER_ALLOW_ENCODED_SLASHES
            )
        except PathRejected as exc:
            return {"path": str(exc)}
        if normal != self.path:
            return {"path": f"Write the path in its normal form: {normal}"}
        if is_reserved_path(self.path):
            return {"path": "This path is served by the gateway itself; choose another path."}
        if self.rewrite and not self.rewrite.startswith("/"):
            return {"rewrite": "A rewrite path starts with /."}
        return {}


class RouteTierOverride(models.Model):
    """Another rate-limit tier on a route for callers holding a role (e.g. premium)."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="tier_overrides")
    role = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="tier_overrides")
    tier = models.ForeignKey(RateLimitTier, on_delete=models.PROTECT, related_name="overrides")

    history = HistoricalRecords(
        app="audit",
        verbose_name="route tier override change",
        verbose_name_plural="route tier override changes",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["route", "role"], name="tier_override_unique_role")
        ]

    def __str__(self) -> str:
        return f"{self.role} -> {self.tier}"
