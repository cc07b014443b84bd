"""Record: what happened to a request, once its answer was sent (or given up on).

Three independent sinks, each in its own module: Prometheus metrics (routing.observe.metrics),
the per-route traffic summary shown on the admin index (routing.observe.traffic_stats), and one
access-log line (routing.observe.access_log). `started` counts the request in flight; `record`
ends that count and writes all three.
"""

from __future__ import annotations

import time

from routing.observe import access_log, metrics, traffic_stats
from routing.proxy.context import RequestContext

__all__ = ["abandoned", "record", "started"]


def started() -> None:
    metrics.IN_FLIGHT.inc()


def abandoned() -> None:
    """A request cancelled before it had an answer: out of the in-flight count, not recorded."""
    metrics.IN_FLIGHT.dec()


def record(ctx: RequestContext, error_code: str | None = None) -> None:
    metrics.IN_FLIGHT.dec()
    # Read once: the three sinks report one latency for one request.
    elapsed = time.perf_counter() - ctx.started
    metrics.request_finished(ctx, error_code, elapsed)
    traffic_stats.request_finished(ctx, error_code, elapsed)
    access_log.request_finished(ctx, error_code, elapsed)
