"""URLs: the admin and the gateway's own endpoints, then a catch-all to the proxy view.

In the served stack, gateway_site.asgi sends non-reserved paths straight to the lean proxy entry;
the catch-all here keeps the same pipeline reachable through Django's own handler (test client,
plain `runserver`).
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from routing import views

urlpatterns = [
    path("admin", RedirectView.as_view(url="/admin/")),
    path("admin/", admin.site.urls),
    path("auth/", include("accounts.urls")),
    path("health", views.health),
    path("health/services", views.health_services),
    path("metrics", views.metrics),
    path("registry/", include("routing.registry_urls")),
    re_path(r"^(?:admin|auth|health|metrics|registry|static)(?:/|$)", views.reserved_not_found),
    re_path(r"", views.proxy),
]

handler404 = "routing.views.not_found"
handler500 = "routing.views.server_error"
