"""Stage 7, record: what happened to a request, once its answer was sent.

Three independent sinks, each in its own module: Prometheus metrics (routing.metrics), the
per-route traffic summary shown on the admin index (routing.traffic_stats), and one access-log
line (routing.access_log).
"""

from __future__ import annotations

import time

from routing import access_log, metrics, traffic_stats
from routing.context import RequestContext

__all__ = ["record"]


def record(ctx: RequestContext, error_code: str | None = None) -> None:
    # Read once: the three sinks report one latency for one request.
    elapsed = time.perf_counter() - ctx.started
    metrics.request_finished(ctx, error_code, elapsed)
    traffic_stats.request_finished(ctx, error_code, elapsed)
    access_log.request_finished(ctx, error_code, elapsed)
