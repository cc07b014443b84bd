"""W3C trace context for every request, and optional OpenTelemetry spans.

A request joins its caller's trace when it carries a valid `traceparent` (version 00, lower-case
hex, ids not all zero, one header only); otherwise the gateway starts a new trace and the
caller's header, malformed or not, is never forwarded. Either way the gateway takes a span id of
its own: the upstream receives `traceparent: 00-<trace>-<gateway span>-<flags>`, plus the caller's
`tracestate` only when the caller's traceparent was valid (W3C: tracestate without a valid
traceparent must not be propagated). Answers carry no traceparent: X-Request-ID is the client's
handle, and the access log joins it to the trace id.

With PORTIER_OTEL_ENABLED=true (the `otel` extra) the OpenTelemetry SDK takes over the ids: the
request's server span, parented on the caller's traceparent, is the gateway span; each stage gets
a child span, and the upstream call a client span whose id is the parent the upstream receives.
Disabled, a request costs one boolean check (`otel()`). Spans carry the method, the path (its
secret-looking matrix parameters redacted, routing.observe.redaction), the route and status:
never the query, a cookie or another header's value.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from routing.hot_settings import hot_settings
from routing.observe.redaction import redact_path
from routing.proxy.context import GatewayResponse, RequestContext

__all__ = ["begin", "otel", "traceparent", "tracestate"]

_TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


def begin(ctx: RequestContext) -> None:
    """Join the caller's trace or start one, and give the gateway a span id of its own."""
    found = None
    for name, value in ctx.headers:
        if name == b"traceparent":
            if found is not None:  # two traceparents: no way to tell which one is the parent
                found = None
                break
            found = _TRACEPARENT.fullmatch(value.strip()) or False
    if found:
        trace_id, parent_id, flags = found.groups()
        if trace_id != _ZERO_TRACE and parent_id != _ZERO_SPAN:
            ctx.trace_id = trace_id.decode()
            ctx.parent_span_id = parent_id.decode()
            ctx.trace_flags = flags.decode()
            ctx.span_id = _new_id(64)
            return
    ctx.trace_id = _new_id(128)
    ctx.trace_flags = "01" if random.random() < hot_settings.PORTIER_TRACE_SAMPLE_RATIO else "00"
    ctx.span_id = _new_id(64)


def _new_id(bits: int) -> str:
    # random (reseeded after fork) as the OpenTelemetry SDK does; `or 1`: never the invalid 0.
    return f"{random.getrandbits(bits) or 1:0{bits // 4}x}"


def traceparent(ctx: RequestContext, span_id: str = "") -> bytes:
    """The traceparent the upstream receives: the gateway's span (or `span_id`) as its parent."""
    return f"00-{ctx.trace_id}-{span_id or ctx.span_id}-{ctx.trace_flags}".encode()


def tracestate(ctx: RequestContext) -> bytes | None:
    """The caller's tracestate (several headers joined, as W3C allows), only in its trace."""
    if not ctx.parent_span_id:
        return None
    values = [value.strip() for name, value in ctx.headers if name == b"tracestate"]
    joined = b",".join(value for value in values if value)
    return joined or None


# --- OpenTelemetry (optional) ---------------------------------------------------------------------

Stage = Callable[[RequestContext], Awaitable[None]]
Forward = Callable[[RequestContext], Awaitable[GatewayResponse]]

_otel: _Otel | None = None


def otel() -> _Otel | None:
    """The span factory when PORTIER_OTEL_ENABLED, else None (settings checked the package)."""
    global _otel
    if not hot_settings.PORTIER_OTEL_ENABLED:
        return None
    if _otel is None:  # made in the serving process, after any fork, on its first request
        _otel = _Otel(hot_settings.PORTIER_TRACE_SAMPLE_RATIO)
    return _otel


class _Otel:
    """An OTLP-exporting tracer, and the pipeline's stages and upstream call wrapped in spans."""

    def __init__(self, sample_ratio: float, exporter: Any = None) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        self._trace = trace
        # Resource.create and the exporter read the standard OTEL_* variables themselves.
        provider = TracerProvider(
            resource=Resource.create(
                {SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", "portier")}
            ),
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        )
        provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
        self.provider = provider
        self.tracer = provider.get_tracer("portier")
        self._wrapped: dict[Any, Any] = {}

    @contextmanager
    def request_span(self, ctx: RequestContext) -> Iterator[Any]:
        """The gateway's server span; ctx's trace and span ids become the span's own."""
        trace = self._trace
        parent = None
        if ctx.parent_span_id:
            remote = trace.SpanContext(
                int(ctx.trace_id, 16),
                int(ctx.parent_span_id, 16),
                is_remote=True,
                trace_flags=trace.TraceFlags(int(ctx.trace_flags, 16)),
            )
            parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        with self.tracer.start_as_current_span(
            f"{ctx.method} gateway",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": ctx.method, "portier.request_id": ctx.request_id},
        ) as span:
            own = span.get_span_context()
            ctx.trace_id = f"{own.trace_id:032x}"
            ctx.span_id = f"{own.span_id:016x}"
            ctx.trace_flags = f"{int(own.trace_flags):02x}"
            yield span
            route = ctx.route
            span.set_attribute("url.path", redact_path(ctx.path))
            span.set_attribute("http.response.status_code", ctx.status)
            if route is not None:
                span.set_attribute("http.route", route.name)

    def stages(self, stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
        return tuple(self._cached(stage, self._stage) for stage in stages)

    def forward(self, forward: Forward) -> Forward:
        return self._cached(forward, self._forward)

    def _cached(self, fn: Any, wrap: Callable[[Any], Any]) -> Any:
        wrapped = self._wrapped.get(fn)
        if wrapped is None:
            wrapped = self._wrapped[fn] = wrap(fn)
        return wrapped

    def _stage(self, stage: Stage) -> Stage:
        name = stage.__name__

        async def traced(ctx: RequestContext) -> None:
            with self.tracer.start_as_current_span(name):
                await stage(ctx)

        return traced

    def _forward(self, forward: Forward) -> Forward:
        client = self._trace.SpanKind.CLIENT

        async def traced(ctx: RequestContext) -> GatewayResponse:
            with self.tracer.start_as_current_span("upstream", kind=client) as span:
                # The upstream's parent is this span: rewrite the header transform built.
                value = traceparent(ctx, f"{span.get_span_context().span_id:016x}")
                ctx.upstream_headers = [
                    (name, value if name == b"traceparent" else old)
                    for name, old in ctx.upstream_headers
                ]
                response = await forward(ctx)
                span.set_attribute("server.address", ctx.target_url)
                span.set_attribute("http.response.status_code", response.status)
                return response

        return traced
