"""The admin's live dashboard: the gateway's traffic per minute, per service and per route over the
last 15 or 60 minutes, its targets' health, and what is failing now.

Everything comes from this process's snapshot and health board and from the cache (the traffic
summary: one pipelined round trip; the registry's expired instances: two more when a service
takes registrations), never from the database or the audit table. The admin index, the route's
page, the fragment they refresh themselves with (routing.admin_dashboard) and
`GET /admin/api/traffic` (routing.api.traffic_view) all read `dashboard()`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.core.cache import cache
from django.utils import timezone
from django.utils.safestring import SafeString

from routing import dataplane
from routing.config.holder import holder
from routing.config.spec import ServiceSpec, Snapshot
from routing.observe import charts, traffic_stats
from routing.observe.service_health import service_report
from routing.observe.traffic_stats import HITS, LIMITED, NO_ROUTE, WOULD_DENY, RouteTraffic
from routing.upstream import registry
from routing.upstream.monitor import monitor

__all__ = [
    "DEFAULT_WINDOW",
    "METRICS",
    "WINDOWS",
    "Chart",
    "Dashboard",
    "Failing",
    "Panel",
    "ServicePanel",
    "dashboard",
    "failing_now",
    "health_badges",
    "may_view_dashboard",
    "series",
    "window_from",
]

# Minutes shown -> complete minutes read before the current one.
WINDOWS = {15: 14, 60: traffic_stats.LONGEST_WINDOW}
DEFAULT_WINDOW = 15
# What each minute is charted as, in the order the charts appear.
METRICS = ("requests", "error_rate", "p50", "p95", "rate_limited", "would_deny")


def may_view_dashboard(user: Any) -> bool:
    """Staff who may view routes: what the dashboard shows is routes, services and upstream
    addresses. Auditors are staff too, but see none of it."""
    return bool(
        getattr(user, "is_active", False)
        and getattr(user, "is_staff", False)
        and user.has_perm("routing.view_route")
    )


def window_from(value: Any) -> int:
    """The window (15 or 60 minutes) a query asks for; the default for anything else."""
    try:
        minutes = int(value)
    except (TypeError, ValueError):
        return DEFAULT_WINDOW
    return minutes if minutes in WINDOWS else DEFAULT_WINDOW


def _ratio(row: Sequence[int]) -> float | None:
    return 100.0 * row[1] / row[0] if row[0] else None


_PER_MINUTE: dict[str, Callable[[Sequence[int]], float | None]] = {
    "requests": lambda row: row[0],
    "error_rate": _ratio,
    "p50": lambda row: traffic_stats.percentile(row[2:HITS], 0.5),
    "p95": lambda row: traffic_stats.percentile(row[2:HITS], 0.95),
    "rate_limited": lambda row: row[LIMITED],
    "would_deny": lambda row: row[WOULD_DENY],
}


def series(traffic: RouteTraffic, metric: str) -> tuple[float | None, ...]:
    """One metric's value in each minute of the window, oldest first (None: no requests)."""
    per_minute = _PER_MINUTE[metric]
    return tuple(per_minute(row) for row in traffic.minutes)


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart: `metric` names it for the page (`data-metric`), `headline` gives the window's
    value in words beside it."""

    metric: str  # requests, error_rate, latency, rate_limited, would_deny
    title: str
    headline: str
    values: str  # the charted values, comma-separated ("" for a minute without one)
    svg: SafeString


def _count(n: float) -> str:
    return f"{n:,.0f}"


def _percent(n: float) -> str:
    return f"{n:.1f} %" if n < 10 else f"{n:.0f} %"


def _ms(n: float) -> str:
    return f"{n:,.1f} ms" if n < 10 else f"{n:,.0f} ms"


def _values(values: Sequence[float | None]) -> str:
    return ",".join("" if v is None else f"{v:g}" for v in values)


def _charts(traffic: RouteTraffic, labels: Sequence[str], size: charts.Size) -> tuple[Chart, ...]:
    minutes = max(len(labels), 1)
    requests = series(traffic, "requests")
    errors = series(traffic, "error_rate")
    p50, p95 = series(traffic, "p50"), series(traffic, "p95")
    limited, denied = series(traffic, "rate_limited"), series(traffic, "would_deny")
    p50_all, p95_all = traffic.p50_ms, traffic.p95_ms
    latency = (
        "no requests"
        if p95_all is None or p50_all is None
        else (f"p50 {_ms(p50_all)}, p95 {_ms(p95_all)}")
    )
    return (
        Chart(
            "requests",
            "Requests per minute",
            f"{_count(traffic.requests)} ({traffic.requests / minutes:,.1f}/min)",
            _values(requests),
            charts.bar_chart(
                requests,
                labels,
                title="Requests per minute",
                fmt=_count,
                what="requests",
                size=size,
            ),
        ),
        Chart(
            "error_rate",
            "Error rate (5xx)",
            f"{_percent(traffic.error_rate)} ({_count(traffic.errors)} errors)",
            _values(errors),
            charts.bar_chart(
                errors,
                labels,
                title="Error rate (5xx)",
                fmt=_percent,
                what="errors",
                size=size,
                css="errors",
            ),
        ),
        Chart(
            "latency",
            "Latency p50 / p95",
            latency,
            _values(p95),
            charts.line_chart(
                (("p50", p50), ("p95", p95)), labels, title="Latency p50 / p95", fmt=_ms, size=size
            ),
        ),
        Chart(
            "rate_limited",
            "Rate-limited (429)",
            _count(traffic.rate_limited),
            _values(limited),
            charts.bar_chart(
                limited,
                labels,
                title="Rate-limited (429)",
                fmt=_count,
                what="rate-limited",
                size=size,
                css="limited",
            ),
        ),
        Chart(
            "would_deny",
            "Would have denied (report-only)",
            f"would have denied {_count(traffic.would_deny)}",
            _values(denied),
            charts.bar_chart(
                denied,
                labels,
                title="Would have denied (report-only)",
                fmt=_count,
                what="would have been denied",
                size=size,
                css="would-deny",
            ),
        ),
    )


@dataclass(frozen=True, slots=True)
class Panel:
    """The whole gateway, or one route, with its charts."""

    name: str  # the route's name; "" for the whole gateway
    traffic: RouteTraffic
    charts: tuple[Chart, ...]
    service: str = ""  # a route's service, in the snapshot this process serves
    route_id: int | None = None  # a route's id, when the snapshot has it (for a link)


@dataclass(frozen=True, slots=True)
class TargetBadge:
    url: str
    available: bool
    state: str
    circuit: str


@dataclass(frozen=True, slots=True)
class ServicePanel:
    """One service: its targets' health and the sum of its routes' traffic."""

    name: str
    status: str  # healthy, degraded or unavailable
    targets: tuple[TargetBadge, ...]
    traffic: RouteTraffic
    charts: tuple[Chart, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing failing now, in a sentence's parts: what, where, and the detail."""

    kind: str  # circuit, unhealthy, expired, skipped, health_state
    label: str  # what it is, for people: "Circuit open", "Unhealthy target", ...
    subject: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Failing:
    circuits: tuple[Problem, ...] = ()
    unhealthy: tuple[Problem, ...] = ()
    expired: tuple[Problem, ...] = ()
    skipped: tuple[Problem, ...] = ()
    health_state: tuple[Problem, ...] = ()  # the monitor cannot read the shared health state

    @property
    def problems(self) -> tuple[Problem, ...]:
        return self.health_state + self.circuits + self.unhealthy + self.expired + self.skipped


@dataclass(frozen=True, slots=True)
class Dashboard:
    window: int  # minutes shown: 15 or 60
    labels: tuple[str, ...]  # each minute's start (HH:MM, local time), oldest first
    gateway: Panel | None
    services: tuple[ServicePanel, ...] = ()
    routes: tuple[Panel, ...] = ()
    failing: Failing | None = None
    route: str = ""  # a route's page: only that route (its panel is `gateway`'s place)
    error: str = ""  # the cache did not answer: no traffic to show
    minutes: tuple[int, ...] = field(default=())  # minute numbers (Unix time // 60)

    @property
    def windows(self) -> tuple[int, ...]:
        return tuple(WINDOWS)


def _label(minute: int) -> str:
    return timezone.localtime(datetime.fromtimestamp(minute * 60, tz=UTC)).strftime("%H:%M")


def dashboard(
    *, window: int = DEFAULT_WINDOW, route: str = "", now: float | None = None
) -> Dashboard:
    """The gateway's dashboard (or, with `route`, that route's charts alone) over `window`
    minutes. A cache that does not answer leaves the traffic out, with `error` saying so; the
    health board and the snapshot are this process's and always answer."""
    window = window if window in WINDOWS else DEFAULT_WINDOW
    snapshot = holder.current
    try:
        found = traffic_stats.summary(
            routes=[r.name for r in snapshot.routes], window=WINDOWS[window], now=now
        )
    except Exception as exc:  # the cache is down: health and the configuration still show
        return Dashboard(
            window=window,
            labels=(),
            gateway=None,
            failing=None if route else failing_now(snapshot, registrations=False),
            route=route,
            error=f"the cache did not answer ({type(exc).__name__})",
        )
    labels = tuple(_label(m) for m in found.minutes)
    spec_of = {r.name: r for r in snapshot.routes}
    if route:
        traffic = next((r for r in found.routes if r.route == route), None)
        traffic = traffic or RouteTraffic.of(route, [(0,) * traffic_stats.WIDTH] * len(labels))
        return Dashboard(
            window=window,
            labels=labels,
            gateway=_route_panel(traffic, spec_of, labels, charts.LARGE),
            route=route,
            minutes=found.minutes,
        )
    return Dashboard(
        window=window,
        labels=labels,
        gateway=Panel("", found.total, _charts(found.total, labels, charts.LARGE)),
        services=_services(snapshot, found.routes, labels),
        routes=tuple(_route_panel(r, spec_of, labels, charts.SMALL) for r in found.routes),
        failing=failing_now(snapshot),
        minutes=found.minutes,
    )


def _route_panel(
    traffic: RouteTraffic, spec_of: dict[str, Any], labels: Sequence[str], size: charts.Size
) -> Panel:
    spec = spec_of.get(traffic.route)
    return Panel(
        name=traffic.route,
        traffic=traffic,
        charts=_charts(traffic, labels, size),
        service=spec.service.name if spec is not None else "",
        route_id=spec.id if spec is not None else None,
    )


def _services(
    snapshot: Snapshot, routes: Sequence[RouteTraffic], labels: Sequence[str]
) -> tuple[ServicePanel, ...]:
    """Every service this process serves, busiest first: health from the board, traffic summed
    over its routes in the current snapshot (a route since moved counts for its new service)."""
    dataplane.start()  # the board and its monitor, as /health/services starts them
    service_of = {r.name: r.service.name for r in snapshot.routes}
    tables: dict[str, list[tuple[tuple[int, ...], ...]]] = {}
    for traffic in routes:
        name = service_of.get(traffic.route)
        if name is not None and traffic.route != NO_ROUTE:
            tables.setdefault(name, []).append(traffic.minutes)
    panels = []
    for spec in snapshot.services.values():
        badges = health_badges(spec)
        up = sum(1 for b in badges if b.available)
        traffic = RouteTraffic.of(
            spec.name, traffic_stats.sum_minutes(tables.get(spec.name, []), len(labels))
        )
        panels.append(
            ServicePanel(
                name=spec.name,
                # As /health/services says it (routing.observe.service_health).
                status="healthy"
                if up and up == len(badges)
                else "degraded"
                if up
                else "unavailable",
                targets=badges,
                traffic=traffic,
                charts=_charts(traffic, labels, charts.SMALL),
            )
        )
    panels.sort(key=lambda p: (-p.traffic.requests, p.name))
    return tuple(panels)


def failing_now(snapshot: Snapshot, *, registrations: bool = True) -> Failing:
    """Open circuits and unhealthy targets (this process's board), registered instances that
    expired (still listed in their service's index), entries the snapshot skipped, and a health
    state the monitor cannot read."""
    dataplane.start()
    circuits, unhealthy = [], []
    for spec in sorted(snapshot.services.values(), key=lambda s: s.name):
        for target in service_report(spec)["targets"]:
            where = f"{spec.name}: {target['url']}"
            if target["circuit"] == "open":
                circuits.append(Problem("circuit", "Circuit open", where, "no requests sent"))
            elif target["circuit"] == "half_open":
                circuits.append(
                    Problem("circuit", "Circuit half-open", where, "the next request is a trial")
                )
            if target["state"] == "unhealthy":
                error = target["error"] or "failed its health checks"
                unhealthy.append(Problem("unhealthy", "Unhealthy target", where, error))
    expired = _expired_instances(snapshot) if registrations else ()
    skipped = tuple(
        Problem("skipped", "Configuration entry skipped", name, "invalid: not served")
        for name in snapshot.skipped
    )
    state = ()
    if monitor.last_error is not None:
        state = (
            Problem(
                "health_state",
                "Health state unreadable",
                "the cache",
                f"the last known states are kept ({monitor.last_error})",
            ),
        )
    return Failing(tuple(circuits), tuple(unhealthy), expired, skipped, state)


def _expired_instances(snapshot: Snapshot) -> tuple[Problem, ...]:
    """Instances still in their service's index whose own entry expired: they stopped
    heartbeating. The index is pruned on the next registration or removal."""
    services = sorted(s.name for s in snapshot.services.values() if s.allow_registration)
    if not services:
        return ()
    indexes = cache.get_many([registry.INDEX_KEY.format(s) for s in services])
    listed = [(s, i) for s in services for i in indexes.get(registry.INDEX_KEY.format(s)) or ()]
    if not listed:
        return ()
    alive = cache.get_many([registry.INSTANCE_KEY.format(s, i) for s, i in listed])
    return tuple(
        Problem("expired", "Registered instance expired", f"{s}: {i}", "it stopped heartbeating")
        for s, i in listed
        if registry.INSTANCE_KEY.format(s, i) not in alive
    )


def health_badges(spec: ServiceSpec) -> tuple[TargetBadge, ...]:
    """A service's targets as red/green badges (for a service list)."""
    return tuple(
        TargetBadge(t["url"], t["available"], t["state"], t["circuit"])
        for t in service_report(spec)["targets"]
    )
