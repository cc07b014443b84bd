"""Issue 23's targets, read off one run's table: each with its measured value and PASS/MISS.

All on the same run, the one-worker gateway pinned to core 0, 50 connections, the access log on.
A target whose rows were not measured (not selected with --only, or a peer not installed) shows
`n/a` and why. This is a benchmark, not a test: nothing fails on a MISS, and a smoke run's
figures (1 s, no warm-up, a busy machine) say nothing about the targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.report import Row, find, short_reason
from bench.scenarios import EXPRESS, EXPRESS_KEEPALIVE, GATEWAY, GATEWAY_2W, REFERENCE

__all__ = ["TARGETS", "Target", "evaluate", "format_targets"]

PIPELINE = "jwt-rl-c50"
RSS_LIMIT_MIB = 100.0


@dataclass(frozen=True)
class Target:
    text: str  # as the issue words it
    # (scenario, server, metric) of the numerator and the denominator; metric is a Row median
    a: tuple[str, str, str]
    b: tuple[str, str, str] | None  # None: `a` alone is compared with `limit`
    limit: float
    at_most: bool = False  # the value must be <= limit (p99, RSS) instead of >=


TARGETS: tuple[Target, ...] = (
    Target(
        "full pipeline req/s >= 2.5x the seed's Express gateway as written",
        (PIPELINE, GATEWAY, "rps"),
        (PIPELINE, EXPRESS, "rps"),
        2.5,
    ),
    Target(
        "full pipeline req/s >= 1.6x the Express gateway with upstream keep-alive",
        (PIPELINE, GATEWAY, "rps"),
        (PIPELINE, EXPRESS_KEEPALIVE, "rps"),
        1.6,
    ),
    Target(
        "full pipeline req/s >= 0.85x the reference proxy",
        (PIPELINE, GATEWAY, "rps"),
        (PIPELINE, REFERENCE, "rps"),
        0.85,
    ),
    Target(
        "full pipeline p99 no worse than the keep-alive Express gateway's",
        (PIPELINE, GATEWAY, "p99_ms"),
        (PIPELINE, EXPRESS_KEEPALIVE, "p99_ms"),
        1.0,
        at_most=True,
    ),
    Target(
        "cache hit req/s >= 1.5x the same route proxied",
        ("cache-hit-c50", GATEWAY, "rps"),
        ("small-c50", GATEWAY, "rps"),
        1.5,
    ),
    Target(
        "two workers on two cores >= 1.7x one worker (full pipeline; wrk shares the cores)",
        (PIPELINE, GATEWAY_2W, "rps"),
        (PIPELINE, GATEWAY, "rps"),
        1.7,
    ),
    Target(
        f"RSS <= {RSS_LIMIT_MIB:.0f} MiB per worker (this run's peak; 10 minutes: --soak 600)",
        (PIPELINE, GATEWAY, "peak_rss_mib"),
        None,
        RSS_LIMIT_MIB,
        at_most=True,
    ),
)


def _value(rows: list[Row], where: tuple[str, str, str]) -> tuple[float | None, str]:
    scenario, server, metric = where
    row = find(rows, scenario, server)
    if row is None:
        unmeasured = next((r for r in rows if (r.scenario, r.variant) == where[:2]), None)
        if unmeasured is not None and unmeasured.unavailable:
            return None, f"{scenario}/{server} skipped: {short_reason(unmeasured.unavailable)}"
        if unmeasured is not None and unmeasured.pending:
            return None, f"{scenario}/{server} not built yet"
        return None, f"{scenario}/{server} not run"
    return row.median(metric), ""


def evaluate(rows: list[Row]) -> list[dict[str, Any]]:
    results = []
    for target in TARGETS:
        value, why = _value(rows, target.a)
        if target.b is not None and value is not None:
            denominator, why = _value(rows, target.b)
            value = value / denominator if denominator else None
        verdict = None
        if value is not None:
            verdict = value <= target.limit if target.at_most else value >= target.limit
        results.append(
            {
                "target": target.text,
                "limit": target.limit,
                "at_most": target.at_most,
                "value": value,
                "pass": verdict,
                **({"why": why} if why else {}),
            }
        )
    return results


def format_targets(results: list[dict[str, Any]], *, access_log: bool) -> str:
    log = "" if access_log else " -- ACCESS LOG OFF: not the issue's conditions"
    lines = [f"targets (issue 23; gateway: one worker on core 0, 50 connections){log}:"]
    for result in results:
        unit = " MiB" if "MiB" in result["target"] else "x"
        sign = "<=" if result["at_most"] else ">="
        if result["value"] is None:
            state = f"    n/a  ({result.get('why', 'not measured')})"
        else:
            verdict = "PASS" if result["pass"] else "MISS"
            state = f"{result['value']:7.3f}{unit} {sign} {result['limit']:g}{unit}  {verdict}"
        lines.append(f"  {result['target']:<86} {state}")
    return "\n".join(lines)
