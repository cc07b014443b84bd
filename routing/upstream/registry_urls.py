"""URLs of the service registry API, mounted at /registry/ (routing.upstream.registry_api)."""

from __future__ import annotations

from django.urls import path

from routing.upstream.registry_api import HeartbeatView, InstancesView, InstanceView

urlpatterns = [
    path("services/<slug:service>/instances", InstancesView.as_view()),
    path("services/<slug:service>/instances/<str:instance_id>", InstanceView.as_view()),
    path("services/<slug:service>/instances/<str:instance_id>/heartbeat", HeartbeatView.as_view()),
]
