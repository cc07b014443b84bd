"""What the bench measures: the gateway routes it configures and the scenarios that load them.

Each scenario is measured on Portier (`gateway`) and on the servers of its `servers`: the peers a
user would pick instead (the Express gateway of seed 004 as written and with upstream
keep-alive, the minimal reference proxy, NGINX as a plain proxy), the two-worker gateway, and
`direct` (the upstream itself). The Express gateway and NGINX serve the same route paths, built
from ROUTES. A new scenario is one `BenchRoute` (if it needs a new route) and one `Scenario`
line; `pending` holds one back with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BENCH_CACHE",
    "DIRECT",
    "EDGE_CORS",
    "EDGE_ORIGIN",
    "EDGE_TRANSFORM",
    "EXPRESS",
    "EXPRESS_KEEPALIVE",
    "GATEWAY",
    "GATEWAY_2W",
    "NGINX_PROXY",
    "REFERENCE",
    "ROUTES",
    "SCENARIOS",
    "SERVERS",
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


# The servers of the table, in its order. Portier is `gateway` (one worker, core 0) and
# `gateway-2w` (two workers, unpinned); every ratio is Portier / another server.
GATEWAY = "gateway"
GATEWAY_2W = "gateway-2w"
EXPRESS = "express"  # seed 004's Express gateway as written: no upstream keep-alive
EXPRESS_KEEPALIVE = "express-keepalive"  # the same with a keep-alive http.Agent upstream
REFERENCE = "reference"  # bench/reference_proxy.py: JWT + one Redis INCR + pooled aiohttp
NGINX_PROXY = "nginx-proxy"  # NGINX as a plain proxy: the ceiling of proxying here
DIRECT = "direct"  # wrk straight at the upstream
SERVERS = (GATEWAY, GATEWAY_2W, EXPRESS, EXPRESS_KEEPALIVE, REFERENCE, NGINX_PROXY, DIRECT)

EXPRESS_BOTH = (EXPRESS, EXPRESS_KEEPALIVE)
PROXY_PEERS = (*EXPRESS_BOTH, REFERENCE, NGINX_PROXY, DIRECT)  # public routes
PIPELINE_PEERS = (*EXPRESS_BOTH, REFERENCE, DIRECT)  # JWT + role + rate limit routes


@dataclass(frozen=True)
class Scenario:
    """One row group of the table: Portier vs the servers that do the same job."""

    name: str
    route: str  # BenchRoute name
    connections: int
    token: str | None = None  # "user" or "admin": the wrk requests carry that Bearer token
    servers: tuple[str, ...] = (DIRECT,)  # measured besides `gateway`, in SERVERS order
    origin: str | None = None  # the wrk requests carry this Origin (a browser's CORS request)
    pending: str | None = None  # why the scenario cannot be measured yet

    @property
    def variants(self) -> list[str]:
        return [s for s in SERVERS if s == GATEWAY or s in self.servers]


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
    Scenario("small-c50", "bench-small", 50, servers=PROXY_PEERS),
    Scenario("small-c200", "bench-small", 200, servers=PROXY_PEERS),
    Scenario("16k-c50", "bench-16k", 50, servers=PROXY_PEERS),
    Scenario("1m-c50", "bench-1m", 50, servers=PROXY_PEERS),
    Scenario("jwt-c50", "bench-jwt", 50, token="user"),
    # The full pipeline: the targets (one worker on one core, 50 connections).
    Scenario("jwt-rl-c50", "bench-jwt-rl", 50, token="user", servers=(GATEWAY_2W, *PIPELINE_PEERS)),
    Scenario("jwt-rl-c200", "bench-jwt-rl", 200, token="user", servers=PIPELINE_PEERS),
    Scenario("admin-audit-c50", "bench-audited", 50, token="admin"),
    Scenario(
        "jwt-rl-edge-c50",
        "bench-edge",
        50,
        token="user",
        servers=(*EXPRESS_BOTH, DIRECT),
        origin=EDGE_ORIGIN,
    ),
    Scenario("cache-hit-c50", "bench-cached", 50),
)


def route_named(name: str) -> BenchRoute:
    for route in ROUTES:
        if route.name == name:
            return route
    raise KeyError(name)
