"""The gateway-wide defaults: one row of edge settings every route inherits."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from routing.config.edge import cors_errors, security_errors


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
