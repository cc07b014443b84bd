"""Services and their targets: where the gateway forwards, and how it picks and checks a target."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from simple_history.models import HistoricalRecords

from routing.validators import validate_upstream_url

HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9-]+$")


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
        if hashing_on_header and not HEADER_NAME_RE.match(self.hash_header):
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
