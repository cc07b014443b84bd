"""What the bench measures: the gateway routes it configures and the scenarios that load them.

To add a scenario once its gateway stage exists (JWT, rate limits, audit), clear its `pending`
reason: its route, policy, tier and token are already configured, so it is then measured against
the direct upstream like the others. A new scenario is one `BenchRoute` (if it needs a new route)
and one `Scenario` line.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BENCH_CACHE",
    "EDGE_CORS",
    "EDGE_ORIGIN",
    "EDGE_TRANSFORM",
    "ROUTES",
    "SCENARIOS",
    "BenchRoute",
    "Scenario",
    "route_named",
]


@dataclass(frozen=True)
class BenchRoute:
    """One gateway Route row: `path` on the gateway, rewritten onto the upstream's `payload`."""

    name: str
    path: str
    payload: str  # key of bench.upstream.ENDPOINTS
    policy: str | None = None  # RolePolicy.Kind value; None = public
    tier_rate: str | None = None  # RateLimitTier rate, high enough never to trip
    edge: bool = False  # a typical browser-facing route: CORS and two header transforms
    cache: bool = False  # answers kept in the shared response cache (BENCH_CACHE)


@dataclass(frozen=True)
class Scenario:
    """One row group of the table: gateway vs direct (and the reference proxy where useful)."""

    name: str
    route: str  # BenchRoute name
    connections: int
    token: str | None = None  # "user" or "admin": the wrk requests carry that Bearer token
    reference: bool = False  # also measure bench/reference_proxy.py on the same upstream path
    origin: str | None = None  # the wrk requests carry this Origin (a browser's CORS request)
    pending: str | None = None  # why the scenario cannot be measured yet


ROUTES: tuple[BenchRoute, ...] = (
    BenchRoute("bench-small", "/small", "small"),
    BenchRoute("bench-16k", "/16k", "16k"),
    BenchRoute("bench-1m", "/1m", "1m"),
    BenchRoute("bench-jwt", "/jwt/small", "small", policy="authenticated"),
    BenchRoute(
        "bench-jwt-rl", "/jwt-rl/small", "small", policy="authenticated", tier_rate="1000000000/m"
    ),
    BenchRoute("bench-audited", "/audited/small", "small", policy="admin_only"),
    BenchRoute(
        "bench-edge",
        "/edge/small",
        "small",
        policy="authenticated",
        tier_rate="1000000000/m",
        edge=True,
    ),
    BenchRoute("bench-cached", "/cached/small", "small", cache=True),
)

# The bench-cached route's cache: every request after the first is a hit.
BENCH_CACHE = {"ttl": 3600}
# The bench-edge route's edge options (docs/configuration.md spells them).
EDGE_ORIGIN = "https://app.example.com"
EDGE_CORS = {"origins": [EDGE_ORIGIN], "credentials": True, "max_age": 600}
EDGE_TRANSFORM = {
    "request": {"headers": {"set": {"X-Tenant": "acme"}, "add": {"X-Caller": "$user_id"}}}
}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("small-c50", "bench-small", 50, reference=True),
    Scenario("small-c200", "bench-small", 200, reference=True),
    Scenario("16k-c50", "bench-16k", 50),
    Scenario("1m-c50", "bench-1m", 50),
    Scenario("jwt-c50", "bench-jwt", 50, token="user"),
    Scenario("jwt-rl-c50", "bench-jwt-rl", 50, token="user"),
    Scenario("admin-audit-c50", "bench-audited", 50, token="admin"),
    Scenario("jwt-rl-edge-c50", "bench-edge", 50, token="user", origin=EDGE_ORIGIN),
    Scenario("cache-hit-c50", "bench-cached", 50),
)


def route_named(name: str) -> BenchRoute:
    for route in ROUTES:
        if route.name == name:
            return route
    raise KeyError(name)
