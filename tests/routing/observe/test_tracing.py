"""W3C trace context end to end: the caller's trace kept, the gateway's own span forwarded."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from django.conf import settings

from tests.conftest import make_route, make_service, publish, received
from tests.routing.observe.test_access_log import capture_access_log

pytestmark = pytest.mark.django_db(transaction=True)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])")


@pytest.fixture
def access_log():
    with capture_access_log() as lines:
        yield lines


@pytest.fixture
def route(upstream):
    make_route(make_service("users", upstream.url), "/users")
    publish()


def sent_upstream(upstream, name: str) -> list[str]:
    return [value for key, value in received(upstream)[-1]["headers"] if key == name]


def forwarded_parent(upstream) -> tuple[str, str, str]:
    (value,) = sent_upstream(upstream, "traceparent")
    found = TRACEPARENT.fullmatch(value)
    assert found, value
    trace_id, span_id, flags = found.groups()
    assert trace_id != "0" * 32 and span_id != "0" * 16
    return trace_id, span_id, flags


def test_it_keeps_the_callers_trace_and_sends_its_own_span_as_parent(
    client, upstream, route, access_log
):
    response = client.get(
        "/users/1", headers={"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE"}
    )

    trace_id, span_id, flags = forwarded_parent(upstream)
    assert (trace_id, flags) == (TRACE, "01")
    assert span_id != PARENT
    assert sent_upstream(upstream, "tracestate") == ["congo=t61rcWkgMzE"]
    (line,) = access_log.wait(1)
    assert (line["trace_id"], line["span_id"]) == (TRACE, span_id)
    assert "traceparent" not in response.headers  # the answer's handle is X-Request-ID


def test_it_keeps_an_unsampled_callers_decision(client, upstream, route):
    client.get("/users/1", headers={"traceparent": f"00-{TRACE}-{PARENT}-00"})

    assert forwarded_parent(upstream)[::2] == (TRACE, "00")


def test_it_joins_several_tracestate_headers(client, upstream, route):
    client.get(
        "/users/1",
        headers=[("traceparent", VALID), ("tracestate", "a=1"), ("tracestate", "b=2")],
    )

    assert sent_upstream(upstream, "tracestate") == ["a=1,b=2"]


@pytest.mark.parametrize(
    "malformed",
    [
        f"01-{TRACE}-{PARENT}-01",  # a version this gateway does not speak
        f"00-{TRACE.upper()}-{PARENT}-01",
        f"00-{'0' * 32}-{PARENT}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE}-{PARENT}-01-extra",
        f"00-{TRACE[:-1]}-{PARENT}-01",
        f"00_{TRACE}_{PARENT}_01",
        "garbage",
    ],
)
def test_it_replaces_a_malformed_traceparent_and_drops_its_tracestate(
    client, upstream, route, malformed
):
    client.get("/users/1", headers={"traceparent": malformed, "tracestate": "congo=t61"})

    trace_id, span_id, _ = forwarded_parent(upstream)
    assert trace_id != TRACE and span_id != PARENT
    assert sent_upstream(upstream, "tracestate") == []


def test_two_traceparents_start_a_new_trace(client, upstream, route):
    client.get("/users/1", headers=[("traceparent", VALID), ("traceparent", VALID)])

    assert forwarded_parent(upstream)[0] != TRACE


def test_without_a_traceparent_it_starts_a_trace_and_logs_its_id(
    client, upstream, route, access_log
):
    client.get("/users/1", headers={"tracestate": "orphan=1"})
    first = forwarded_parent(upstream)
    assert sent_upstream(upstream, "tracestate") == []
    client.get("/users/2")
    second = forwarded_parent(upstream)

    lines = access_log.wait(2)
    assert [line["trace_id"] for line in lines] == [first[0], second[0]]
    assert [line["span_id"] for line in lines] == [first[1], second[1]]
    assert first[0] != second[0]
    assert first[2] == second[2] == "01"  # new traces are sampled by default


def test_new_traces_follow_the_sample_ratio(client, upstream, route, settings):
    settings.PORTIER_TRACE_SAMPLE_RATIO = 0.0

    client.get("/users/1")

    assert forwarded_parent(upstream)[2] == "00"


def test_otel_enabled_without_the_package_stops_the_start():
    # The tests install the otel extra: hide it from this child as if it were not installed.
    hidden = "import sys; sys.modules['opentelemetry'] = None; import django; django.setup()"
    result = subprocess.run(
        [sys.executable, "-c", hidden],
        env={"DJANGO_SETTINGS_MODULE": "gateway_site.settings", "PORTIER_OTEL_ENABLED": "true"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=settings.BASE_DIR,
    )

    assert result.returncode != 0
    assert "PORTIER_OTEL_ENABLED=true needs OpenTelemetry" in result.stderr


@pytest.fixture
def exported_spans(monkeypatch, settings):
    """OpenTelemetry on, its spans kept in memory (skipped without the `otel` extra)."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from routing.observe import tracing

    exporter = InMemorySpanExporter()
    spans = tracing._Otel(1.0, exporter=exporter)
    monkeypatch.setattr(tracing, "_otel", spans)
    settings.PORTIER_OTEL_ENABLED = True

    def finished():
        spans.provider.force_flush()
        return {span.name: span for span in exporter.get_finished_spans()}

    yield finished
    spans.provider.shutdown()


def test_otel_spans_are_parented_on_the_caller_and_match_what_is_forwarded(
    client, upstream, route, exported_spans, access_log
):
    client.get("/users/1", headers={"traceparent": VALID})

    trace_id, forwarded_span, _ = forwarded_parent(upstream)
    (line,) = access_log.wait(1)
    spans = exported_spans()
    server, call = spans["GET gateway"], spans["upstream"]
    assert trace_id == TRACE == f"{server.context.trace_id:032x}" == line["trace_id"]
    assert f"{server.parent.span_id:016x}" == PARENT
    assert f"{server.context.span_id:016x}" == line["span_id"]
    assert f"{call.context.span_id:016x}" == forwarded_span
    assert call.parent.span_id == server.context.span_id
    for stage in ("check_framing", "match", "authenticate", "authorize", "limit", "transform"):
        assert spans[stage].parent.span_id == server.context.span_id
    assert server.attributes["http.response.status_code"] == 200
