"""URLs of the management API, mounted at /admin/api/ (reserved: never proxied).

Resources answer with or without a trailing slash (`/admin/api/routes/users`); the gateway-wide
defaults are one object, `/admin/api/defaults`; the configuration timeline is `/admin/api/versions/`
(routing.api.versions_view); the route tester is `POST /admin/api/tester` (routing.api.tester_view).
"""

from __future__ import annotations

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from routing.api import schema, views
from routing.api.authentication import AdminSessionAuthentication, UserCredentialsAuthentication
from routing.api.config_view import ConfigDocumentView
from routing.api.history import HistoryView
from routing.api.permissions import IsStaff
from routing.api.tester_view import TesterView
from routing.api.traffic_view import TrafficView
from routing.api.versions_view import VersionListView, VersionRollbackView, VersionView

# Importing the schema module registers its OpenAPI extensions.
__all__ = ["schema", "urlpatterns"]

router = SimpleRouter()
router.trailing_slash = "/?"
router.register("services", views.ServiceViewSet, basename="api-service")
router.register("routes", views.RouteViewSet, basename="api-route")
router.register("policies", views.PolicyViewSet, basename="api-policy")
router.register("tiers", views.TierViewSet, basename="api-tier")
router.register("api-keys", views.ApiKeyViewSet, basename="api-key")
router.register("audit", views.AuditEntryViewSet, basename="api-audit")

_STAFF = {
    "authentication_classes": [UserCredentialsAuthentication, AdminSessionAuthentication],
    "permission_classes": [IsStaff],
}

_DEFAULTS = views.DefaultsViewSet.as_view(
    {"get": "retrieve", "put": "update", "patch": "partial_update"}
)

urlpatterns = [
    path("config", ConfigDocumentView.as_view(), name="api-config"),
    re_path(r"^defaults/?$", _DEFAULTS, name="api-defaults"),
    re_path(r"^versions/?$", VersionListView.as_view(), name="api-versions"),
    re_path(r"^versions/(?P<number>[0-9]{1,18})/?$", VersionView.as_view(), name="api-version"),
    re_path(
        r"^versions/(?P<number>[0-9]{1,18})/rollback/?$",
        VersionRollbackView.as_view(),
        name="api-version-rollback",
    ),
    re_path(r"^tester/?$", TesterView.as_view(), name="api-tester"),
    re_path(r"^traffic/?$", TrafficView.as_view(), name="api-traffic"),
    re_path(r"^history/(?P<kind>[-a-z]+)/?$", HistoryView.as_view(), name="api-history"),
    path("schema/", SpectacularAPIView.as_view(**_STAFF), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema", **_STAFF), name="api-docs"),
    *router.urls,
]
