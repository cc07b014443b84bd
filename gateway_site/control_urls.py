"""The control plane's URLs: the admin, the management API, the token endpoints, the registry.

gateway_site.urls mounts this module lazily: Django imports it, and with it DRF, drf-spectacular
and every admin module, with the first request under one of these prefixes rather than at start
(gateway_site.admin_loading says why).
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

# Registers every app's ModelAdmins where the start skipped it; a no-op where it did not.
admin.autodiscover()

urlpatterns = [
    path("admin/api/", include("routing.api.urls")),
    path("admin/", admin.site.urls),
    path("auth/", include("accounts.urls")),
    path("registry/", include("routing.upstream.registry_urls")),
]
