"""The gateway's configuration, edited in the Django admin and compiled into a snapshot.

Nothing here is read per request: routing.config turns the enabled rows into a frozen, compiled
view that every process loads from the cache.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.html import escape
from simple_history.models import HistoricalRecords

from routing.config.cache import cache_errors
from routing.config.composite import backend_errors
from routing.config.edge import cors_errors, ip_list_errors, security_errors
from routing.config.transforms import template_groups, transform_errors
from routing.proxy.paths import PathRejected, is_reserved_path, normalize_path
from routing.validators import validate_upstream_url

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
_RATE_RE = re.compile(r"^[1-9]\d*/([1-9]\d*)?[smhd]$")
_REGEX_META = re.compile(r"[\\.^$*+?{}\[\]|()]")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9-]+$")
_HOST_RE = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def split_csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class Service(models.Model):
    """A backend the gateway forwards to: its targets, how one is picked, timeouts and health."""

    class Balancing(models.TextChoices):
        ROUND_ROBIN = "round_robin", "Round-robin"
        WEIGHTED = "weighted", "Weighted round-robin"
        LEAST_IN_FLIGHT = "least_in_flight", "Least in-flight requests"
        CONSISTENT_HASH = "consistent_hash", "Consistent hash (sticky)"

    class HashOn(models.TextChoices):
        CLIENT_IP = "client_ip", "Client IP"
        USER = "user", "User id (anonymous callers by client IP)"
        HEADER = "header", "A header's value"

    name = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=255, blank=True)
    connect_timeout = models.FloatField(
        default=5.0, validators=[MinValueValidator(0.01)], help_text="Seconds to open a connection."
    )
    read_timeout = models.FloatField(
        default=30.0,
        validators=[MinValueValidator(0.01)],
        help_text="Seconds to wait for each chunk of the upstream's answer.",
    )
    write_timeout = models.FloatField(
        default=30.0,
        validators=[MinValueValidator(0.01)],
        help_text="Seconds to wait while sending each chunk of the request.",
    )
    max_in_flight = models.PositiveIntegerField(
        default=0,
        help_text="Requests this service may have in flight per gateway process; past it, "
        "503 overloaded. 0 = no cap.",
    )
    total_timeout = models.FloatField(
        default=60.0,
        validators=[MinValueValidator(0.0)],
        help_text="Seconds from the first attempt until the answer starts, retries included: the "
        "retry budget. The body then streams under the read timeout. 0 = no limit.",
    )
    retries = models.PositiveSmallIntegerField(
        default=1,
        validators=[MaxValueValidator(5)],
        help_text="Extra attempts, each on another target when there is one: idempotent methods "
        "(or routes that allow more), never a request whose body was streamed.",
    )
    retry_statuses = models.CharField(
        max_length=100,
        blank=True,
        help_text="Upstream statuses that are retried like a refused connection, e.g. 502, 503, "
        "504. Empty = connection errors only.",
    )
    balancing = models.CharField(
        max_length=20, choices=Balancing.choices, default=Balancing.WEIGHTED
    )
    hash_on = models.CharField(
        max_length=10,
        choices=HashOn.choices,
        default=HashOn.CLIENT_IP,
        help_text="Consistent hash only: what keeps a caller on one target.",
    )
    hash_header = models.CharField(
        max_length=100, blank=True, help_text="Header to hash on (hash on = header)."
    )
    health_path = models.CharField(
        max_length=200,
        blank=True,
        help_text="Active checks: path probed with GET on every target, e.g. /health (a 2xx or "
        "3xx answer is healthy). Empty = no active checks.",
    )
    health_interval = models.FloatField(
        default=10.0, validators=[MinValueValidator(0.1)], help_text="Seconds between probes."
    )
    health_timeout = models.FloatField(
        default=2.0, validators=[MinValueValidator(0.01)], help_text="Seconds a probe may take."
    )
    healthy_threshold = models.PositiveSmallIntegerField(
        default=2,
        validators=[MinValueValidator(1)],
        help_text="Consecutive good probes that bring an unhealthy target back.",
    )
    unhealthy_threshold = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1)],
        help_text="Consecutive failed probes that take a target out.",
    )
    breaker_failures = models.PositiveSmallIntegerField(
        default=5,
        help_text="Passive checks: consecutive failed requests (connection errors, timeouts, "
        "breaker statuses) that open a target's circuit. 0 = no circuit breaker.",
    )
    breaker_statuses = models.CharField(
        max_length=100,
        blank=True,
        default="502, 503, 504",
        help_text="Upstream statuses that count as failures for the circuit breaker.",
    )
    breaker_cooldown = models.FloatField(
        default=30.0,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds an open circuit keeps its target out before one trial request.",
    )
    allow_registration = models.BooleanField(
        default=False,
        help_text="Instances may register themselves over /registry/ (callers with the "
        "registrar role), beside the static targets.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(
        app="audit", verbose_name="service change", verbose_name_plural="service changes"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def has_upstream(self) -> bool:
        """Whether requests can be sent anywhere: an enabled target, or instances may register.
        Without either, every request to the service's routes gets 503."""
        return self.allow_registration or self.targets.filter(enabled=True).exists()

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for field in ("retry_statuses", "breaker_statuses"):
            try:
                statuses = parse_statuses(getattr(self, field))
            except ValueError as exc:
                errors[field] = str(exc)
            else:
                setattr(self, field, ", ".join(str(code) for code in statuses))
        hashing_on_header = (
            self.balancing == self.Balancing.CONSISTENT_HASH and self.hash_on == self.HashOn.HEADER
        )
        if hashing_on_header and not _HEADER_NAME_RE.match(self.hash_header):
            errors["hash_header"] = "Hashing on a header needs the header's name."
        self.health_path = self.health_path.strip()
        if self.health_path and (
            not self.health_path.startswith("/") or any(c in self.health_path for c in " #\r\n")
        ):
            errors["health_path"] = "A health path starts with / and holds no spaces or #."
        if self.health_path and self.health_timeout >= self.health_interval:
            errors["health_timeout"] = "A probe must time out before the next one is due."
        if errors:
            raise ValidationError(errors)


def parse_statuses(value: str) -> tuple[int, ...]:
    """'502, 503' -> (502, 503); only 5xx statuses, which say the upstream failed."""
    codes: list[int] = []
    for item in split_csv(value):
        if not item.isdigit() or not 500 <= int(item) <= 599:
            raise ValueError(f"{item!r} is not a 5xx status; list statuses like 502, 503, 504.")
        codes.append(int(item))
    return tuple(sorted(set(codes)))


class Target(models.Model):
    """One upstream instance of a service: a base URL and its share of the traffic."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="targets")
    url = models.URLField(
        max_length=300,
        help_text="Base URL, e.g. http://10.0.0.5:8080 or http://users:8000/api (a path is "
        "prepended to every forwarded path).",
    )
    weight = models.PositiveIntegerField(
        default=100, validators=[MinValueValidator(1), MaxValueValidator(1000)]
    )
    enabled = models.BooleanField(default=True)

    history = HistoricalRecords(
        app="audit", verbose_name="target change", verbose_name_plural="target changes"
    )

    class Meta:
        ordering = ["service__name", "url"]
        constraints = [
            models.UniqueConstraint(fields=["service", "url"], name="target_unique_url_per_service")
        ]

    def __str__(self) -> str:
        return self.url

    def clean(self) -> None:
        # The one SSRF rule (routing.validators): the admin, the management API and the import
        # all come through here, the registry calls it too.
        try:
            validate_upstream_url(self.url)
        except ValidationError as exc:
            raise ValidationError({"url": exc}) from None
        parts = urlsplit(self.url)
        if parts.query or parts.fragment:
            raise ValidationError({"url": "A target URL cannot carry a query string or fragment."})


class RolePolicy(models.Model):
    """Who may call a route: enforced by the identity stage (a route without one is public)."""

    class Kind(models.TextChoices):
        PUBLIC = "public", "Public (no credentials)"
        AUTHENTICATED = "authenticated", "Any authenticated caller"
        ANY_OF = "any_of", "Callers holding any of the roles"
        ALL_OF = "all_of", "Callers holding all of the roles"
        ADMIN_ONLY = "admin_only", "Admins only (audited)"

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.AUTHENTICATED)
    roles = models.ManyToManyField(Group, blank=True, related_name="role_policies")
    description = models.CharField(max_length=255, blank=True)
    report_only = models.BooleanField(
        default=False,
        help_text="Report only: callers the policy would refuse are let through, counted in "
        "metrics, the access log and the dashboard, so you see whom it would block before "
        "enforcing it.",
    )

    history = HistoricalRecords(
        app="audit",
        verbose_name="role policy change",
        verbose_name_plural="role policy changes",
        m2m_fields=["roles"],
    )

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "role policies"

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def clean(self) -> None:
        if self.report_only and self.kind == self.Kind.ADMIN_ONLY:
            # Report-only lets refused callers through: on the admin routes that is anyone.
            raise ValidationError(
                {
                    "report_only": "An admin-only policy is always enforced: report-only would "
                    "let anyone reach the routes it guards."
                }
            )


class RateLimitTier(models.Model):
    """A request budget such as 100/m per user, enforced by the rate-limit stage."""

    class Key(models.TextChoices):
        USER = "user", "Per user"
        API_KEY = "api_key", "Per API key"
        IP = "ip", "Per client IP"
        ROUTE = "route", "Route-wide"
        HEADER = "header", "Per value of a header"

    name = models.SlugField(max_length=100, unique=True)
    rate = models.CharField(
        max_length=20, help_text="Requests per period: 100/m, 5/15m, 1000/h, 10000/d."
    )
    key = models.CharField(max_length=20, choices=Key.choices, default=Key.USER)
    header_name = models.CharField(
        max_length=100, blank=True, help_text="Header whose value is the key (key = header)."
    )
    per_method = models.BooleanField(default=False, help_text="Count each HTTP method separately.")
    description = models.CharField(max_length=255, blank=True)
    report_only = models.BooleanField(
        default=False,
        help_text="Report only: requests over the limit are counted and served, and reported in "
        "metrics, the access log and the dashboard; clients get no RateLimit headers.",
    )

    history = HistoricalRecords(
        app="audit",
        verbose_name="rate-limit tier change",
        verbose_name_plural="rate-limit tier changes",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.rate})"

    def clean(self) -> None:
        if not _RATE_RE.match(self.rate.strip()):
            raise ValidationError({"rate": "Write the rate as count/period, e.g. 100/m or 5/15m."})
        self.rate = self.rate.strip()
        if self.key == self.Key.HEADER and not _HEADER_NAME_RE.match(self.header_name):
            raise ValidationError({"header_name": "A header-keyed tier needs a header name."})


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
            isinstance(k, str) and _HEADER_NAME_RE.match(k) and isinstance(v, str)
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


class GatewayDefaults(models.Model):
    """The gateway-wide edge settings (one row): what every route does unless it says otherwise,
    and what the gateway's own endpoints (/auth/, the management API, /api-docs) and requests
    that match no route get. routing.config.edge describes each block."""

    cors = models.JSONField(
        null=True,
        blank=True,
        default=None,
        help_text='Empty: no CORS. Or e.g. {"origins": ["https://app.example.com"], '
        '"origin_patterns": ["https://*.example.com"], "methods": ["GET", "POST"], "headers": '
        '["Authorization", "Content-Type"], "expose_headers": ["X-Request-ID"], "credentials": '
        'true, "max_age": 600}.',
    )
    security_headers = models.JSONField(
        default=dict,
        blank=True,
        help_text="Keys laid over the built-in set (nosniff, X-Frame-Options DENY, Referrer-Policy "
        "no-referrer, Cross-Origin-Resource-Policy same-origin, HSTS for a year over HTTPS, "
        'Server and X-Powered-By dropped), e.g. {"hsts_max_age": 0} or {"enabled": false}.',
    )
    https_redirect = models.BooleanField(
        default=False,
        help_text="Send plain-HTTP callers to HTTPS (the scheme as seen through "
        "PORTIER_TRUSTED_PROXIES' X-Forwarded-Proto).",
    )
    compression = models.BooleanField(
        default=False,
        help_text="Gzip (or brotli) compressible answers the upstream did not compress, when "
        "the client accepts it.",
    )
    compression_min_bytes = models.PositiveIntegerField(
        default=1024, help_text="Answers declaring a smaller Content-Length are sent as they are."
    )

    history = HistoricalRecords(
        app="audit",
        verbose_name="gateway defaults change",
        verbose_name_plural="gateway defaults changes",
    )

    class Meta:
        verbose_name = "gateway defaults"
        verbose_name_plural = "gateway defaults"

    def __str__(self) -> str:
        return "Gateway defaults"

    def save(self, *args: object, **kwargs: object) -> None:
        self.pk = 1  # there is only ever one
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def current(cls) -> GatewayDefaults:
        """The one row, or (never saved) the built-in values, unsaved: reading writes nothing."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)

    @classmethod
    def load(cls) -> GatewayDefaults:
        """The one row for editing, made with the built-in values the first time."""
        defaults, _ = cls.objects.get_or_create(pk=1)
        return defaults

    def clean(self) -> None:
        problems = {
            "cors": cors_errors(self.cors, route=False),
            "security_headers": security_errors(self.security_headers),
        }
        errors = {field: " ".join(lines) for field, lines in problems.items() if lines}
        if errors:
            raise ValidationError(errors)


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


class ConfigVersion(models.Model):
    """The published configuration's version number (one row): bumped under a row lock by every
    publish, so concurrent publishers are serialised and the newest configuration always wins."""

    number = models.PositiveBigIntegerField(default=0)
    published_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"config v{self.number}"


class ConfigRevision(models.Model):
    """One entry of the configuration timeline: the declarative document (without API keys) as a
    published version made it, who made it, from where and why. Written by publish() in the
    version bump's transaction, only when the document differs from the previous entry's, so a
    republish of the same data (a rebuilt cache) adds nothing; a rollback applies `document`."""

    class Source(models.TextChoices):
        ADMIN = "admin", "admin"
        API = "api", "management API"
        IMPORT = "import", "import"
        ROLLBACK = "rollback", "rollback"
        SYSTEM = "system", "system"

    number = models.PositiveBigIntegerField(
        primary_key=True, help_text="The published configuration version."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # The author's username as it was: the timeline still names a user deleted since.
    author_name = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.SYSTEM)
    comment = models.TextField(blank=True)
    summary = models.TextField(blank=True, help_text="The changes since the previous version.")
    document = models.JSONField()

    class Meta:
        ordering = ("-number",)
        verbose_name = "configuration version"
        verbose_name_plural = "configuration timeline"

    def __str__(self) -> str:
        return f"v{self.number}"
