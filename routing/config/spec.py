"""The compiled configuration's types: what the data plane reads, frozen and typed.

A spec's plain fields (int, float, bool, str) carry the model field of the same name: the
compiler (routing.config.compiler) copies them over by name, so a new plain option of a Service
or a Route is a model field plus a spec field here. Fields of other types are compiled from the
data (a target's parsed URL, a route's regex, a service's health checks).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from routing.config.cache import CacheSpec
from routing.config.composite import CompositeSpec
from routing.config.edge import CorsSpec, IpRules, SecuritySpec, compile_security
from routing.config.transforms import TransformSpec

__all__ = [
    "EMPTY",
    "EdgeSpec",
    "HealthCheckSpec",
    "PolicySpec",
    "RouteSpec",
    "ServiceSpec",
    "Snapshot",
    "TargetSpec",
    "TierSpec",
    "WebSocketSpec",
    "compile_target",
    "target_state_id",
]


@dataclass(frozen=True, slots=True)
class TargetSpec:
    url: str  # scheme://host[:port], no path
    base_path: str  # the target URL's own path, without a trailing slash
    weight: int
    origin: httpx.URL = field(compare=False, hash=False, default=None)  # url, parsed once
    key: str = ""  # the target's whole URL, as reports show it
    sid: str = ""  # service + URL, hashed: the target's name in health state (upstream.board)
    instance_id: str = ""  # set for instances from the registry, empty for static targets


@dataclass(frozen=True, slots=True)
class HealthCheckSpec:
    path: str
    interval: float
    timeout: float
    healthy_threshold: int
    unhealthy_threshold: int


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    id: int
    name: str
    connect_timeout: float
    read_timeout: float
    write_timeout: float
    retries: int
    targets: tuple[TargetSpec, ...]
    timeout: dict[str, float | None] = field(hash=False, compare=False, default_factory=dict)
    max_in_flight: int = 0
    total_timeout: float = 0.0  # 0 = none
    retry_statuses: frozenset[int] = frozenset()
    balancing: str = "weighted"
    hash_on: str = "client_ip"
    hash_header: bytes = b""  # lower case
    health: HealthCheckSpec | None = None
    breaker_failures: int = 0  # 0 = no circuit breaker
    breaker_statuses: frozenset[int] = frozenset()
    breaker_cooldown: float = 30.0
    allow_registration: bool = False


@dataclass(frozen=True, slots=True)
class PolicySpec:
    name: str
    kind: str
    roles: tuple[str, ...]
    report_only: bool = False  # a refusal is reported (ctx.would_deny), not enforced


@dataclass(frozen=True, slots=True)
class TierSpec:
    name: str
    rate: str
    key: str
    header_name: str
    per_method: bool
    limit: int = 0  # requests per period, parsed from rate when compiled
    period: int = 0  # seconds
    report_only: bool = False  # over the limit is reported (ctx.would_deny), not enforced


@dataclass(frozen=True, slots=True)
class EdgeSpec:
    """What the answer's way out and the checks before authentication apply (routing.proxy.
    stages.edge): a route's own, resolved over the gateway-wide defaults when compiled."""

    cors: CorsSpec | None = None
    security: SecuritySpec | None = None
    https_redirect: bool = False
    compression_min_bytes: int = 0  # 0 = no compression
    ip_rules: IpRules | None = None


@dataclass(frozen=True, slots=True)
class WebSocketSpec:
    """A route that accepts WebSocket upgrades (routing.proxy.websocket)."""

    idle_timeout: float  # seconds of silence both ways before both sides are closed
    max_connections: int = 0  # open at once per process; 0 = no cap


@dataclass(frozen=True, slots=True)
class RouteSpec:
    id: int
    name: str
    service: ServiceSpec
    hosts: tuple[str, ...]
    methods: frozenset[str]
    path: str
    match_type: str
    regex: re.Pattern[str] | None
    header_matches: tuple[tuple[str, str], ...]
    priority: int
    strip_prefix: bool
    rewrite: str
    preserve_host: bool
    policy: PolicySpec | None
    tier: TierSpec | None
    forward_authorization: bool = True
    tier_overrides: tuple[tuple[str, TierSpec], ...] = ()  # (role, tier)
    audit: bool = False
    retry_unsafe_methods: bool = False
    stream_uploads: bool = False  # chunked bodies streamed, never buffered into a Content-Length
    max_body_bytes: int = 0  # 0 = the global PORTIER_MAX_BODY_BYTES
    edge: EdgeSpec = EdgeSpec()
    transform: TransformSpec | None = None
    cache: CacheSpec | None = None
    websocket: WebSocketSpec | None = None  # None: upgrades are refused (400)
    composite: CompositeSpec | None = None  # the backends of a composite route


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    token: str  # unique per publish: a rolled-back publish may reuse a version number
    built_at: float
    routes: tuple[RouteSpec, ...]
    services: dict[str, ServiceSpec] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    edge: EdgeSpec = EdgeSpec()  # the gateway-wide defaults: for answers no route owns


# Before the first configuration arrives: no routes, the built-in security headers.
EMPTY = Snapshot(
    version=0, token="", built_at=0.0, routes=(), edge=EdgeSpec(security=compile_security())
)


def compile_target(service: str, url: str, weight: int, instance_id: str = "") -> TargetSpec:
    """A target from its base URL: static ones from the snapshot, registered ones from the
    registry (routing.upstream.registry)."""
    parts = urlsplit(url)
    # Lowercase, as httpx would write it: the upstream's Host header is made from this origin.
    origin = f"{parts.scheme}://{parts.netloc.lower()}"
    base_path = parts.path.rstrip("/")
    return TargetSpec(
        url=origin,
        base_path=base_path,
        weight=int(weight),
        origin=httpx.URL(origin),
        key=origin + base_path,
        sid=target_state_id(service, origin + base_path),
        instance_id=instance_id,
    )


def target_state_id(service: str, url: str) -> str:
    """A short, cache-safe name for one target of one service: the same in every process."""
    return hashlib.blake2b(f"{service}|{url}".encode(), digest_size=12).hexdigest()
