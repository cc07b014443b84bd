"""The compiled configuration snapshot: built from the database, shared through the cache.

Control plane: every committed change calls `config_publish()`, which bumps the version row under
a lock, reads all enabled configuration, and stores it in the cache as JSON under its version.
Data plane: each process holds one immutable `Snapshot`. A daemon thread polls the version key and,
when it changes, loads and compiles the new snapshot off the event loop, then swaps the reference
in one assignment, so a request always sees one whole configuration. If the cache or database
fails, the process keeps serving its last-known-good snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

__all__ = [
    "HealthCheckSpec",
    "RouteSpec",
    "ServiceSpec",
    "Snapshot",
    "TargetSpec",
    "compile_target",
    "config_publish",
    "holder",
    "snapshot_build",
    "snapshot_compile",
]

logger = logging.getLogger("portier.snapshot")

VERSION_KEY = "config:version"
SNAPSHOT_KEY = "config:snapshot:{token}"
# Old versions only need to outlive the slowest process's poll.
SNAPSHOT_TTL = 24 * 3600


@dataclass(frozen=True, slots=True)
class TargetSpec:
    url: str  # scheme://host[:port], no path
    base_path: str  # the target URL's own path, without a trailing slash
    weight: int
    origin: httpx.URL = field(compare=False, hash=False, default=None)  # url, parsed once
    key: str = ""  # the target's whole URL, as reports show it
    sid: str = ""  # service + URL, hashed: the target's name in health state (routing.health)
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


@dataclass(frozen=True, slots=True)
class TierSpec:
    name: str
    rate: str
    key: str
    header_name: str
    per_method: bool
    limit: int = 0  # requests per period, parsed from rate when compiled
    period: int = 0  # seconds

    @classmethod
    def compile(cls, data: dict[str, Any]) -> TierSpec:
        from django_ratelimit.core import _split_rate  # django-ratelimit's own rate grammar

        limit, period = _split_rate(data["rate"])
        return cls(**data, limit=limit, period=period)


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
    forward_authorization: bool
    policy: PolicySpec | None
    tier: TierSpec | None
    tier_overrides: tuple[tuple[str, TierSpec], ...] = ()  # (role, tier)
    audit: bool = False
    retry_unsafe_methods: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    token: str  # unique per publish: a rolled-back publish may reuse a version number
    built_at: float
    routes: tuple[RouteSpec, ...]
    services: dict[str, ServiceSpec] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()


EMPTY = Snapshot(version=0, token="", built_at=0.0, routes=())


def snapshot_build(version: int, token: str = "") -> dict[str, Any]:
    """Read every enabled route with its service, targets, policy and tier into plain data."""
    from routing.models import Route, Service

    services = {
        s.id: {
            "id": s.id,
            "name": s.name,
            "connect_timeout": s.connect_timeout,
            "read_timeout": s.read_timeout,
            "write_timeout": s.write_timeout,
            "retries": s.retries,
            "max_in_flight": s.max_in_flight,
            "total_timeout": s.total_timeout,
            "retry_statuses": s.retry_statuses,
            "balancing": s.balancing,
            "hash_on": s.hash_on,
            "hash_header": s.hash_header,
            "health_path": s.health_path,
            "health_interval": s.health_interval,
            "health_timeout": s.health_timeout,
            "healthy_threshold": s.healthy_threshold,
            "unhealthy_threshold": s.unhealthy_threshold,
            "breaker_failures": s.breaker_failures,
            "breaker_statuses": s.breaker_statuses,
            "breaker_cooldown": s.breaker_cooldown,
            "allow_registration": s.allow_registration,
            "targets": [{"url": t.url, "weight": t.weight} for t in s.targets.all() if t.enabled],
        }
        for s in Service.objects.filter(enabled=True).prefetch_related("targets")
    }
    routes = []
    enabled_routes = (
        Route.objects.filter(enabled=True, service__enabled=True)
        .select_related("role_policy", "rate_limit_tier")
        .prefetch_related("role_policy__roles", "tier_overrides__role", "tier_overrides__tier")
    )
    for r in enabled_routes:
        policy = r.role_policy
        tier = r.rate_limit_tier
        routes.append(
            {
                "id": r.id,
                "name": r.name,
                "service_id": r.service_id,
                "hosts": r.host_list(),
                "methods": r.method_list(),
                "path": r.path,
                "match_type": r.match_type,
                "header_matches": r.header_matches or {},
                "priority": r.priority,
                "strip_prefix": r.strip_prefix,
                "rewrite": r.rewrite,
                "preserve_host": r.preserve_host,
                "forward_authorization": r.forward_authorization,
                "audit": r.audit,
                "retry_unsafe_methods": r.retry_unsafe_methods,
                "policy": policy
                and {
                    "name": policy.name,
                    "kind": policy.kind,
                    "roles": sorted(g.name for g in policy.roles.all()),
                },
                "tier": tier and _tier_data(tier),
                "tier_overrides": [
                    {"role": o.role.name, "tier": _tier_data(o.tier)}
                    for o in r.tier_overrides.all()
                ],
            }
        )
    return {
        "version": version,
        "token": token,
        "built_at": time.time(),
        "services": list(services.values()),
        "routes": routes,
    }


def _tier_data(tier: Any) -> dict[str, Any]:
    return {
        "name": tier.name,
        "rate": tier.rate,
        "key": tier.key,
        "header_name": tier.header_name,
        "per_method": tier.per_method,
    }


def snapshot_compile(data: dict[str, Any]) -> Snapshot:
    """Turn plain snapshot data into the frozen, pre-compiled form the proxy reads.

    A route that cannot be compiled (data that bypassed the admin's validation) is skipped and
    reported; the rest of the configuration is served.
    """
    services: dict[int, ServiceSpec] = {}
    skipped: list[str] = []
    for s in data["services"]:
        try:
            services[s["id"]] = _compile_service(s)
        except (KeyError, TypeError, ValueError) as exc:
            # Its routes are skipped too (their service is missing), and reported one by one.
            logger.error("service %s skipped from snapshot: %s", s.get("name"), exc)
    routes: list[RouteSpec] = []
    for r in data["routes"]:
        try:
            routes.append(_compile_route(r, services))
        except (re.error, KeyError, TypeError, ValueError) as exc:
            skipped.append(r.get("name", "?"))
            logger.error("route %s skipped from snapshot: %s", r.get("name"), exc)
    # Highest priority first, then the longest path: the first match wins.
    routes.sort(key=lambda route: (-route.priority, -len(route.path), route.id))
    return Snapshot(
        version=int(data["version"]),
        token=data["token"],
        built_at=float(data["built_at"]),
        routes=tuple(routes),
        services={s.name: s for s in services.values()},
        skipped=tuple(skipped),
    )


def _compile_service(s: dict[str, Any]) -> ServiceSpec:
    from routing.models import parse_statuses

    health = None
    if s.get("health_path"):
        health = HealthCheckSpec(
            path=s["health_path"],
            interval=float(s["health_interval"]),
            timeout=float(s["health_timeout"]),
            healthy_threshold=int(s["healthy_threshold"]),
            unhealthy_threshold=int(s["unhealthy_threshold"]),
        )
    return ServiceSpec(
        id=s["id"],
        name=s["name"],
        connect_timeout=float(s["connect_timeout"]),
        read_timeout=float(s["read_timeout"]),
        write_timeout=float(s["write_timeout"]),
        retries=int(s["retries"]),
        max_in_flight=int(s.get("max_in_flight", 0)),
        targets=tuple(compile_target(s["name"], t["url"], t["weight"]) for t in s["targets"]),
        timeout={
            "connect": float(s["connect_timeout"]),
            "read": float(s["read_timeout"]),
            "write": float(s["write_timeout"]),
            # aiohttp's "connect" timeout covers waiting for a pooled connection too, and would
            # blame a full pool on the target: the pool wait is bounded by total_timeout instead.
            "pool": None,
        },
        total_timeout=float(s.get("total_timeout", 0.0)),
        retry_statuses=frozenset(parse_statuses(s.get("retry_statuses", ""))),
        balancing=s.get("balancing", "weighted"),
        hash_on=s.get("hash_on", "client_ip"),
        hash_header=s.get("hash_header", "").lower().encode("latin-1"),
        health=health,
        breaker_failures=int(s.get("breaker_failures", 0)),
        breaker_statuses=frozenset(parse_statuses(s.get("breaker_statuses", ""))),
        breaker_cooldown=float(s.get("breaker_cooldown", 30.0)),
        allow_registration=bool(s.get("allow_registration", False)),
    )


def compile_target(service: str, url: str, weight: int, instance_id: str = "") -> TargetSpec:
    """A target from its base URL: static ones from the snapshot, registered ones from the
    registry (routing.registry)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
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


def _methods(names: list[str]) -> frozenset[str]:
    methods = {m.upper() for m in names}
    if "GET" in methods:  # HEAD is GET without the body (RFC 9110 9.3.2)
        methods.add("HEAD")
    return frozenset(methods)


def _compile_route(r: dict[str, Any], services: dict[int, ServiceSpec]) -> RouteSpec:
    policy, tier = r.get("policy"), r.get("tier")
    return RouteSpec(
        id=int(r["id"]),
        name=r["name"],
        service=services[r["service_id"]],
        hosts=tuple(h.lower() for h in r["hosts"]),
        methods=_methods(r["methods"]),
        path=r["path"],
        match_type=r["match_type"],
        regex=re.compile(r["path"]) if r["match_type"] == "regex" else None,
        header_matches=tuple((k.lower(), v) for k, v in sorted(r["header_matches"].items())),
        priority=int(r["priority"]),
        strip_prefix=bool(r["strip_prefix"]),
        rewrite=r["rewrite"],
        preserve_host=bool(r["preserve_host"]),
        forward_authorization=bool(r.get("forward_authorization", True)),
        audit=bool(r.get("audit", False)),
        retry_unsafe_methods=bool(r.get("retry_unsafe_methods", False)),
        policy=PolicySpec(policy["name"], policy["kind"], tuple(policy["roles"]))
        if policy
        else None,
        tier=TierSpec.compile(tier) if tier else None,
        tier_overrides=tuple(
            (o["role"], TierSpec.compile(o["tier"])) for o in r.get("tier_overrides", ())
        ),
    )


def config_publish() -> str:
    """Build the configuration from the database and publish it as a new version.

    The version row's UPDATE takes a row lock (a write lock on SQLite) before anything is read, so
    concurrent publishers run one after another and the last to publish has read every commit.
    """
    from routing.models import ConfigVersion

    ConfigVersion.objects.get_or_create(pk=1)
    with transaction.atomic():
        ConfigVersion.objects.filter(pk=1).update(
            number=F("number") + 1, published_at=timezone.now()
        )
        version = ConfigVersion.objects.values_list("number", flat=True).get(pk=1)
        token = f"{version}-{uuid.uuid4().hex[:12]}"
        data = snapshot_build(version, token)
        cache.set(SNAPSHOT_KEY.format(token=token), json.dumps(data), SNAPSHOT_TTL)
        cache.set(VERSION_KEY, token, None)
    logger.info("published configuration v%s (%d routes)", version, len(data["routes"]))
    return token


class SnapshotHolder:
    """Holds this process's current snapshot and keeps it fresh from the cache."""

    def __init__(self) -> None:
        self.current: Snapshot = EMPTY
        self.loaded_at: float = 0.0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Load a snapshot now (blocking, once) and start the refresher thread."""
        with self._lock:
            if self.running:
                return
            self._stop.clear()
            self.refresh()
            self._thread = threading.Thread(
                target=self._run, name="portier-config-refresher", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def refresh(self) -> bool:
        """Swap in the published version if it differs from the one held; True if swapped."""
        try:
            token = cache.get(VERSION_KEY)
            if token is None:
                token = config_publish()
                self._release_db()
            if token == self.current.token:
                self.last_error = None
                return False
            raw = cache.get(SNAPSHOT_KEY.format(token=token))
            if raw is None:
                # The version key outlived its snapshot (cache flushed or evicted): rebuild.
                token = config_publish()
                self._release_db()
                raw = cache.get(SNAPSHOT_KEY.format(token=token))
            snapshot = snapshot_compile(json.loads(raw))
        except Exception as exc:
            if self.last_error is None:
                logger.warning(
                    "configuration refresh failed, serving v%s: %s", self.current.version, exc
                )
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        self.current = snapshot
        self.loaded_at = time.time()
        self.last_error = None
        logger.info("serving configuration v%s", snapshot.version)
        return True

    @staticmethod
    def _release_db() -> None:
        # Publishing is rare on the data plane: do not keep a database connection per process.
        if not connection.in_atomic_block:
            connection.close()

    def _run(self) -> None:
        while not self._stop.wait(settings.PORTIER_CONFIG_POLL_INTERVAL):
            self.refresh()


holder = SnapshotHolder()
