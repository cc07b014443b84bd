"""`GET /admin/api/traffic?window=15|60`: the admin dashboard's numbers as JSON.

The same reading as the dashboard (routing.observe.dashboard): the whole gateway, each service
(its health and the sum of its routes' traffic) and each route with traffic, per minute over the
last 15 or 60 minutes, and what is failing now. From the cache and this process's snapshot and
health board, never the database. Who may read it is who sees the dashboard: staff with
routing.view_route.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from routing.api.tester_view import MayViewRoutes
from routing.api.views import ManagementApi
from routing.observe.dashboard import DEFAULT_WINDOW, WINDOWS, Dashboard, dashboard, series
from routing.observe.traffic_stats import RouteTraffic

__all__ = ["TrafficView", "dashboard_document"]

_DESCRIPTION = """Per minute (oldest first, the last one is the current minute so far), summed
over every gateway process: `requests`, `error_rate` (percentage of answers with status 500 or
above; null in a minute without requests), `p50_ms` and `p95_ms` (latency percentiles from a
histogram, within about 1.5x; null without requests), `rate_limited` (429 rate_limited answers)
and `would_deny` (requests a report-only policy or tier would have refused). `gateway` is the
whole gateway, `services` every served service with its targets' health and the sum of its
routes' traffic, `routes` every route with traffic. `failing_now` lists open circuits, unhealthy
targets, expired registered instances and skipped configuration entries. `error` says why the
traffic is missing when the cache did not answer."""


def _traffic(traffic: RouteTraffic) -> dict[str, Any]:
    def rounded(values: tuple[float | None, ...]) -> list[float | None]:
        return [None if v is None else round(v, 2) for v in values]

    p50, p95 = traffic.p50_ms, traffic.p95_ms
    return {
        "requests": traffic.requests,
        "errors": traffic.errors,
        "error_rate": round(traffic.error_rate, 2),
        "p50_ms": None if p50 is None else round(p50, 2),
        "p95_ms": None if p95 is None else round(p95, 2),
        "rate_limited": traffic.rate_limited,
        "would_deny": traffic.would_deny,
        "per_minute": {
            "requests": list(series(traffic, "requests")),
            "error_rate": rounded(series(traffic, "error_rate")),
            "p50_ms": rounded(series(traffic, "p50")),
            "p95_ms": rounded(series(traffic, "p95")),
            "rate_limited": list(series(traffic, "rate_limited")),
            "would_deny": list(series(traffic, "would_deny")),
        },
    }


def dashboard_document(found: Dashboard) -> dict[str, Any]:
    """The dashboard as plain data (the API's answer)."""
    return {
        "window": found.window,
        "minutes": [
            datetime.fromtimestamp(m * 60, UTC).isoformat().replace("+00:00", "Z")
            for m in found.minutes
        ],
        "error": found.error or None,
        "gateway": _traffic(found.gateway.traffic) if found.gateway else None,
        "services": [
            {
                "name": s.name,
                "status": s.status,
                "targets": [
                    {"url": t.url, "available": t.available, "state": t.state, "circuit": t.circuit}
                    for t in s.targets
                ],
                **_traffic(s.traffic),
            }
            for s in found.services
        ],
        "routes": [
            {"name": r.name, "service": r.service or None, **_traffic(r.traffic)}
            for r in found.routes
        ],
        "failing_now": [
            {"kind": p.kind, "label": p.label, "subject": p.subject, "detail": p.detail}
            for p in (found.failing.problems if found.failing else ())
        ],
    }


class TrafficView(ManagementApi, APIView):
    """The gateway's traffic, its services' health and what is failing now."""

    permission_classes = [MayViewRoutes]

    @extend_schema(
        summary="Traffic per minute, services' health and what is failing now",
        description=_DESCRIPTION,
        parameters=[
            OpenApiParameter(
                "window",
                int,
                enum=list(WINDOWS),
                default=DEFAULT_WINDOW,
                description="Minutes covered, the current one included.",
            )
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="The dashboard.")},
    )
    def get(self, request: Request) -> Response:
        raw = request.query_params.get("window", str(DEFAULT_WINDOW))
        if raw not in {str(w) for w in WINDOWS}:
            raise ValidationError({"window": "Use 15 or 60 (minutes)."})
        return Response(dashboard_document(dashboard(window=int(raw))))
