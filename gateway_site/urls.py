"""URLs: the gateway's own endpoints, the control plane (lazily), then a catch-all to the proxy.

In the served stack, gateway_site.asgi sends non-reserved paths straight to the lean proxy entry;
the catch-all here keeps the same pipeline reachable through Django's own handler (test client,
plain `runserver`).
"""

from __future__ import annotations

from django.urls import URLResolver, path, re_path
from django.urls.resolvers import RoutePattern
from django.views.generic import RedirectView

from gateway_site.errors import reserved_not_found
from routing.api.catalogue import api_docs
from routing.observe import views as observe
from routing.proxy.django_entry import proxy

__all__ = ["LAZY_URLCONFS", "urlpatterns"]

# The control plane's URLs (the admin, the management API, the token endpoints, the registry):
# each module, and DRF with it, is imported with the first request under its prefix
# (gateway_site.admin_loading says why).
LAZY_URLCONFS = {
    "/admin/": "gateway_site.admin_urls",
    "/auth/": "accounts.urls",
    "/registry/": "routing.upstream.registry_urls",
}


def _lazy_include(prefix: str, module: str) -> URLResolver:
    # A resolver given a module's name imports it on its first match; include() imports at once.
    return URLResolver(RoutePattern(prefix.lstrip("/"), is_endpoint=False), module)


urlpatterns = [
    path("admin", RedirectView.as_view(url="/admin/")),
    *(_lazy_include(prefix, module) for prefix, module in LAZY_URLCONFS.items()),
    path("api-docs", api_docs),
    path("health", observe.health),
    path("health/live", observe.health_live),
    path("health/ready", observe.health_ready),
    path("health/services", observe.health_services),
    path("metrics", observe.metrics),
    re_path(r"^(?:admin|api-docs|auth|health|metrics|registry|static)(?:/|$)", reserved_not_found),
    re_path(r"", proxy),
]

handler400 = "gateway_site.errors.bad_request"
handler403 = "gateway_site.errors.permission_denied"
handler404 = "gateway_site.errors.not_found"
handler500 = "gateway_site.errors.server_error"
