"""URLs: the admin and the gateway's own endpoints, then a catch-all to the proxy view.

In the served stack, gateway_site.asgi sends non-reserved paths straight to the lean proxy entry;
the catch-all here keeps the same pipeline reachable through Django's own handler (test client,
plain `runserver`).
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from gateway_site.errors import reserved_not_found
from routing.api.catalogue import api_docs
from routing.observe import views as observe
from routing.proxy.django_entry import proxy

urlpatterns = [
    path("admin", RedirectView.as_view(url="/admin/")),
    path("admin/api/", include("routing.api.urls")),
    path("admin/", admin.site.urls),
    path("api-docs", api_docs),
    path("auth/", include("accounts.urls")),
    path("health", observe.health),
    path("health/live", observe.health_live),
    path("health/ready", observe.health_ready),
    path("health/services", observe.health_services),
    path("metrics", observe.metrics),
    path("registry/", include("routing.upstream.registry_urls")),
    re_path(r"^(?:admin|api-docs|auth|health|metrics|registry|static)(?:/|$)", reserved_not_found),
    re_path(r"", proxy),
]

handler400 = "gateway_site.errors.bad_request"
handler403 = "gateway_site.errors.permission_denied"
handler404 = "gateway_site.errors.not_found"
handler500 = "gateway_site.errors.server_error"
