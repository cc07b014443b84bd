"""Prometheus metrics: counted once per request by routing.proxy.stages.record, exposed at /metrics.

Label values are bounded by the configuration, never by what clients send: route and service
names come from the snapshot (`unmatched` for requests no route took), methods outside the
standard set become `OTHER`, statuses are counted by class (`2xx`). Label children are cached
per route, so a request costs a few dict lookups and metric increments (docs/design.md).

Under gunicorn every worker is a process of its own: with PROMETHEUS_MULTIPROC_DIR set (by
gateway_site/gunicorn.conf.py) prometheus-client writes each process's values to files there, and
`exposition()` sums them. Without it, the values live in this process's default registry.

Target health, circuits and the configuration's version are read when /metrics is scraped, from
this process's health board and snapshot: health is agreed through Redis, so any process's board
is the whole instance's view.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator

from django.conf import settings
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client import values as prometheus_values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from routing.config.holder import holder
from routing.proxy.context import RequestContext
from routing.upstream import health

__all__ = ["IN_FLIGHT", "exposition", "request_finished"]

AUTH_FAILURES = frozenset(
    {"missing_credentials", "invalid_token", "token_expired", "invalid_api_key", "forbidden"}
)
UPSTREAM_ERRORS = frozenset(
    {"upstream_timeout", "upstream_unavailable", "upstream_error", "overloaded"}
)
UNMATCHED = "unmatched"
# *_created series (single-process mode only) would double the exposition for no query's benefit.
disable_created_metrics()

# Multiprocess mode checks the process id on every update, to notice a fork: os.getpid() is a
# system call, ~5 % of the event loop at full load (bench --profile). The id is read once and
# again in a forked child, so the check stays and costs a comparison.
_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    prometheus_values.ValueClass = prometheus_values.MultiProcessValue(lambda: _pid[0])

_METHODS = {
    m: m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
}
# A gateway answers in milliseconds; slow upstreams and streamed bodies take seconds.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "portier_requests",
    "Requests answered by the proxy, by route, service, method and status class.",
    ["route", "service", "method", "status_class"],
)
REQUEST_DURATION = Histogram(
    "portier_request_duration_seconds",
    "From the request's arrival to the end of its answer (streamed bodies included).",
    ["route", "service"],
    buckets=_BUCKETS,
)
UPSTREAM_DURATION = Histogram(
    "portier_upstream_duration_seconds",
    "From the first upstream attempt to the answering upstream's response headers (retries "
    "included), for requests an upstream answered.",
    ["service"],
    buckets=_BUCKETS,
)
BODY_BYTES = Counter(
    "portier_body_bytes",
    "Body bytes relayed: request bodies in, upstream answers out.",
    ["route", "service", "direction"],
)
RATE_LIMITED = Counter(
    "portier_rate_limited",
    "Requests refused with 429 rate_limited, by the tier that counted them.",
    ["tier"],
)
AUTH_FAILURES_TOTAL = Counter(
    "portier_auth_failures",
    "Requests refused for their credentials or roles, by error code.",
    ["code"],
)
UPSTREAM_ERRORS_TOTAL = Counter(
    "portier_upstream_errors",
    "Requests the gateway answered itself because the service failed or was at capacity.",
    ["service", "kind"],
)
REPORT_ONLY = Counter(
    "portier_report_only",
    "Requests a report-only policy or tier would have refused (served anyway), by route and "
    "kind: policy (401/403) or limit (429).",
    ["route", "kind"],
)
CACHE_REQUESTS = Counter(
    "portier_cache_requests",
    "Requests on caching routes by what the response cache did: hit (served fresh), miss "
    "(forwarded, maybe stored), stale (served past freshness: the upstream failed) or bypass "
    "(not cacheable: method, credentials, the request's Cache-Control).",
    ["route", "result"],
)
IN_FLIGHT = Gauge(
    "portier_requests_in_flight",
    "Proxied requests being handled now (all worker processes).",
    multiprocess_mode="livesum",
)
WEBSOCKET_CONNECTIONS = Gauge(
    "portier_websocket_connections",
    "WebSocket connections relayed now, by route (all worker processes).",
    ["route"],
    multiprocess_mode="livesum",
)
WEBSOCKET_MESSAGES = Counter(
    "portier_websocket_messages",
    "WebSocket messages relayed, by route and direction: in (client to upstream) or out.",
    ["route", "direction"],
)

_auth_children = {code: AUTH_FAILURES_TOTAL.labels(code) for code in AUTH_FAILURES}
_tier_children: dict[str, Counter] = {}
# The context's cache_result -> the label value; anything else is not counted (bounded labels).
_CACHE_RESULTS = {"HIT": "hit", "MISS": "miss", "BYPASS": "bypass", "STALE": "stale"}
_REPORT_ONLY_KINDS = frozenset({"policy", "limit"})  # the context's would_deny values


def websocket_opened(route: str) -> None:
    WEBSOCKET_CONNECTIONS.labels(route).inc()


def websocket_closed(route: str) -> None:
    WEBSOCKET_CONNECTIONS.labels(route).dec()


def websocket_message(route: str, direction: str) -> None:
    """One relayed message ("in" or "out"). labels() per message is a dict lookup: a relay
    costs far more per message than that."""
    WEBSOCKET_MESSAGES.labels(route, direction).inc()


class _RouteSeries:
    """The label children of one (route, service) pair, made once and reused by every request."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "cache",
        "duration",
        "errors",
        "report_only",
        "requests",
        "route",
        "service",
    )

    def __init__(self, route: str, service: str) -> None:
        self.route = route
        self.service = service
        self.requests: dict[tuple[str, int], Counter] = {}  # (method, status // 100)
        self.duration = REQUEST_DURATION.labels(route, service)
        self.bytes_in = BODY_BYTES.labels(route, service, "in")
        self.bytes_out = BODY_BYTES.labels(route, service, "out")
        self.errors: dict[str, Counter] = {}
        self.cache: dict[str, Counter] = {}  # by the context's cache_result
        self.report_only: dict[str, Counter] = {}  # by the context's would_deny

    def requests_child(self, method: str, status_class: int) -> Counter:
        child = REQUESTS.labels(self.route, self.service, method, f"{status_class}xx")
        self.requests[(method, status_class)] = child
        return child

    def errors_child(self, kind: str) -> Counter:
        child = self.errors[kind] = UPSTREAM_ERRORS_TOTAL.labels(self.service, kind)
        return child

    def report_only_child(self, kind: str) -> Counter | None:
        if kind not in _REPORT_ONLY_KINDS:
            return None
        child = self.report_only[kind] = REPORT_ONLY.labels(self.route, kind)
        return child

    def cache_child(self, result: str) -> Counter | None:
        label = _CACHE_RESULTS.get(result)
        if label is None:
            return None
        child = self.cache[result] = CACHE_REQUESTS.labels(self.route, label)
        return child


# Keyed by names, not by RouteSpec: a new snapshot's equal route finds its series again. Grows
# only with the route names this process has ever served, as the exported series do.
_series: dict[tuple[str, str], _RouteSeries] = {}
_upstream_children: dict[str, Histogram] = {}


def request_finished(ctx: RequestContext, error_code: str | None, elapsed: float) -> None:
    """Count one request whose answer was sent (or abandoned); runs on the event loop."""
    route = ctx.route
    key = (route.name, route.service.name) if route is not None else (UNMATCHED, UNMATCHED)
    series = _series.get(key)
    if series is None:
        series = _series[key] = _RouteSeries(*key)
    method = _METHODS.get(ctx.method, "OTHER")
    status_class = ctx.status // 100
    counter = series.requests.get((method, status_class))
    if counter is None:
        counter = series.requests_child(method, status_class)
    counter.inc()
    series.duration.observe(elapsed)
    if ctx.bytes_in:
        series.bytes_in.inc(ctx.bytes_in)
    if ctx.bytes_out:
        series.bytes_out.inc(ctx.bytes_out)
    if ctx.target is not None:
        upstream = _upstream_children.get(series.service)
        if upstream is None:
            upstream = _upstream_children[series.service] = UPSTREAM_DURATION.labels(series.service)
        upstream.observe(ctx.upstream_seconds)
    if ctx.cache_result:
        cached = series.cache.get(ctx.cache_result) or series.cache_child(ctx.cache_result)
        if cached is not None:
            cached.inc()
    if ctx.would_deny:
        reported = series.report_only.get(ctx.would_deny) or series.report_only_child(
            ctx.would_deny
        )
        if reported is not None:
            reported.inc()
    if error_code is not None:
        _count_error(series, ctx, error_code)


def _count_error(series: _RouteSeries, ctx: RequestContext, code: str) -> None:
    auth = _auth_children.get(code)
    if auth is not None:
        auth.inc()
    elif code in UPSTREAM_ERRORS:
        child = series.errors.get(code)
        if child is None:
            child = series.errors_child(code)
        child.inc()
    elif code == "rate_limited":
        tier = ctx.tier_name or "unknown"
        limited = _tier_children.get(tier)
        if limited is None:
            limited = _tier_children[tier] = RATE_LIMITED.labels(tier)
        limited.inc()


class _GatewayState(Collector):
    """Gauges read at scrape time: each target's health and circuit, the configuration's age."""

    def describe(self) -> Iterable[Metric]:
        return ()  # nothing to check against other collectors; collect() runs only on scrapes

    def collect(self) -> Iterator[Metric]:
        snapshot = holder.current
        labels = ["service", "target", "state"]
        states = GaugeMetricFamily(
            "portier_target_health",
            "Active health check state of each target (1 for the current state): healthy, "
            "unhealthy, or unchecked (no checks configured, or no probe yet).",
            labels=labels,
        )
        circuits = GaugeMetricFamily(
            "portier_target_circuit",
            "Circuit breaker state of each target (1 for the current state).",
            labels=labels,
        )
        available = GaugeMetricFamily(
            "portier_target_available",
            "1 while the balancer may pick the target (not unhealthy, circuit not open).",
            labels=["service", "target"],
        )
        for service in snapshot.services.values():
            for target in health.service_targets(service):
                seen = health.target_health(service, target)
                for state in ("healthy", "unhealthy", "unchecked"):
                    states.add_metric([service.name, target.key, state], seen.state == state)
                for state in ("closed", "open", "half_open"):
                    circuits.add_metric([service.name, target.key, state], seen.circuit == state)
                available.add_metric([service.name, target.key], seen.available)
        yield states
        yield circuits
        yield available
        yield GaugeMetricFamily(
            "portier_config_version",
            "Configuration version this process serves.",
            value=snapshot.version,
        )
        if snapshot.built_at:
            yield GaugeMetricFamily(
                "portier_config_age_seconds",
                "Seconds since the served configuration was published.",
                value=time.time() - snapshot.built_at,
            )


_state = _GatewayState()
_single_process = CollectorRegistry()
_single_process.register(REGISTRY)  # this process's metrics, with Python's process collectors
_single_process.register(_state)


def exposition(accept: str = "") -> tuple[bytes, str]:
    """Every metric (all worker processes' counts, then the scrape-time state) in the format
    the Accept header asks for (Prometheus text by default, or OpenMetrics), and its type."""
    if settings.PROMETHEUS_MULTIPROC_DIR:
        # A fresh registry per scrape, as prometheus-client prescribes for multiprocess mode.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
        registry.register(_state)
    else:
        registry = _single_process
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
