"""When the admin's modules are imported: at start everywhere, on first use in the served gateway.

Django's AdminConfig imports every app's admin module at start (autodiscovery), and with them the
management API's serializers, DRF and drf-spectacular: ~20 MiB of a worker's ~115 (bench,
docs/design.md). A gateway worker that only proxies, answers probes and serves /metrics never uses
them, so gateway_site.asgi asks for them to be loaded on demand: gateway_site.urls mounts the
admin (gateway_site.admin_urls), the management API, the token endpoints and the registry lazily,
each imported with its first request. Management commands, the tests and WSGI keep Django's
eager discovery, so the system checks always see every ModelAdmin.
"""

from __future__ import annotations

from django.contrib.admin.apps import SimpleAdminConfig

__all__ = ["AdminConfig", "load_on_demand"]

_on_demand = False


def load_on_demand() -> None:
    """Skip autodiscovery at start; call before django.setup() (gateway_site.asgi does)."""
    global _on_demand
    _on_demand = True


class AdminConfig(SimpleAdminConfig):
    """django.contrib.admin's own config, autodiscovering at start unless asked to wait."""

    def ready(self) -> None:
        super().ready()
        if not _on_demand:
            self.module.autodiscover()
