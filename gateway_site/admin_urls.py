"""The admin's URLs and the management API's, mounted lazily at /admin/ by gateway_site.urls.

Django imports this module, and with it every admin module, DRF and drf-spectacular, with the
first request under /admin/ rather than at start (gateway_site.admin_loading says why).
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

# Registers every app's ModelAdmins where the start skipped it; a no-op where it did not.
admin.autodiscover()

urlpatterns = [
    path("api/", include("routing.api.urls")),
    path("", admin.site.urls),
]
