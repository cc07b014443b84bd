"""The compiled configuration snapshot: built from the database, shared through the cache.

Control plane: every committed change calls `config_publish()`, which bumps the version row under
a lock, reads all enabled configuration, and stores it in the cache as JSON under its version.
Data plane: each process holds one immutable `Snapshot`. A daemon thread polls the version key and,
when it changes, loads and compiles the new snapshot off the event loop, then swaps the reference
in one assignment, so a request always sees one whole configuration. If the cache or database
fails, the process keeps serving its last-known-good snapshot.

When the cache has no snapshot to give (a fresh Redis, a flushed or evicted one, one restarted
without persistence), one process rebuilds it from the database: the first to take the build lock.
The others keep serving what they hold and load the rebuilt version on their next poll, so N
processes cost one build and one version bump, not N.
"""

from __future__ import annotations

import contextlib
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
# Held while one process rebuilds a missing snapshot. A builder that dies holding it delays the
# next build by at most this long; a build slower than this may run twice (harmless, only extra).
BUILD_LOCK_KEY = "config:build-lock"
BUILD_LOCK_TTL = 10
# How long a starting process waits for another's build before serving with nothing loaded.
BUILD_WAIT = 5.0


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
    reported; the rest of the configuration is served. Whatever is wrong with one entry, whatever
    the exception, only that entry is lost; a broken envelope (no routes list) fails the whole
    snapshot, and the holder keeps the one it has.
    """
    services: dict[int, ServiceSpec] = {}
    skipped: list[str] = []
    for position, s in enumerate(data["services"], start=1):
        try:
            services[s["id"]] = _compile_service(s)
        except Exception as exc:
            # Its routes are skipped too (their service is missing), and reported one by one.
            logger.error("service %s skipped from snapshot: %r", _entry_name(s, position), exc)
    routes: list[RouteSpec] = []
    for position, r in enumerate(data["routes"], start=1):
        try:
            routes.append(_compile_route(r, services))
        except Exception as exc:
            skipped.append(_entry_name(r, position))
            logger.error("route %s skipped from snapshot: %r", skipped[-1], exc)
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


def _entry_name(entry: Any, position: int) -> str:
    """An entry's name for reports; `#<position>` when it has none to give."""
    name = entry.get("name") if isinstance(entry, dict) else None
    return name if isinstance(name, str) and name else f"#{position}"


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


_MATCH_TYPES = frozenset({"prefix", "exact", "regex"})


def _compile_route(r: dict[str, Any], services: dict[int, ServiceSpec]) -> RouteSpec:
    policy, tier = r.get("policy"), r.get("tier")
    path, match_type = r["path"], r["match_type"]
    # What Route.clean guarantees, checked again: an unknown match type would be served as a
    # prefix, and an empty or relative prefix would match every request.
    if match_type not in _MATCH_TYPES:
        raise ValueError(f"unknown match type {match_type!r}")
    if not isinstance(path, str) or (match_type != "regex" and not path.startswith("/")):
        raise ValueError(f"a {match_type} path must start with /, got {path!r}")
    return RouteSpec(
        id=int(r["id"]),
        name=r["name"],
        service=services[r["service_id"]],
        hosts=tuple(h.lower() for h in r["hosts"]),
        methods=_methods(r["methods"]),
        path=path,
        match_type=match_type,
        regex=re.compile(path) if match_type == "regex" else None,
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
    """Build the configuration from the database and publish it as a new version (its token)."""
    return str(_publish()["token"])


def _publish() -> dict[str, Any]:
    """config_publish, answering the published data itself (a rebuilding holder serves it
    without reading back and parsing what it just wrote).

    The version row's UPDATE takes a row lock (a write lock on SQLite) before anything is read, so
    concurrent publishers run one after another and the last to publish has read every commit.
    """
    from routing.models import ConfigVersion

    global _publish_owed
    ConfigVersion.objects.get_or_create(pk=1)
    with transaction.atomic():
        ConfigVersion.objects.filter(pk=1).update(
            number=F("number") + 1, published_at=timezone.now()
        )
        version = ConfigVersion.objects.values_list("number", flat=True).get(pk=1)
        token = f"{version}-{uuid.uuid4().hex[:12]}"
        data = snapshot_build(version, token)
        try:
            cache.set(SNAPSHOT_KEY.format(token=token), json.dumps(data), SNAPSHOT_TTL)
            cache.set(VERSION_KEY, token, None)
        except Exception:
            # The change is committed but unpublished, and a Redis that comes back with its data
            # would keep serving the version before it: this process's holder publishes again
            # once the cache answers (a Redis that comes back empty is rebuilt anyway).
            _publish_owed = True
            raise
    _publish_owed = False
    logger.info("published configuration v%s (%d routes)", version, len(data["routes"]))
    return data


_publish_owed = False  # a publish from this process failed to reach the cache


def _snapshot_from_database() -> Snapshot:
    """Compile the database's configuration without publishing it: for a process that has no
    snapshot at all while the cache is unreachable (started or restarted during the outage)."""
    from routing.models import ConfigVersion

    version = ConfigVersion.objects.values_list("number", flat=True).filter(pk=1).first() or 0
    # A token no publish makes: the next version the cache gives replaces it.
    return snapshot_compile(snapshot_build(version, f"{version}-local"))


class SnapshotHolder:
    """Holds this process's current snapshot and keeps it fresh from the cache."""

    def __init__(self) -> None:
        self.current: Snapshot = EMPTY
        self.loaded_at: float = 0.0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._built_elsewhere = False  # the last refresh found another process rebuilding

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
            # Another process is rebuilding the snapshot: better to wait briefly for it than to
            # start serving with no routes at all.
            deadline = time.monotonic() + BUILD_WAIT
            while self._built_elsewhere and self.current is EMPTY and time.monotonic() < deadline:
                time.sleep(0.05)
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
        self._built_elsewhere = False
        if _publish_owed:
            self._publish_owed_change()
        try:
            data = self._published()
            if data is None:
                if not self._built_elsewhere:
                    self.last_error = None
                return False
            snapshot = snapshot_compile(data)
        except Exception as exc:
            if self.last_error is None:
                logger.warning(
                    "configuration refresh failed, serving v%s: %s", self.current.version, exc
                )
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.current is not EMPTY:
                return False
            try:
                snapshot = _snapshot_from_database()
            except Exception:
                return False  # no database either: nothing to serve until one answers
            finally:
                self._release_db()
            logger.warning(
                "nothing loaded from the cache: serving v%s from the database", snapshot.version
            )
        else:
            self.last_error = None
        self.current = snapshot
        self.loaded_at = time.time()
        logger.info("serving configuration v%s", snapshot.version)
        return True

    def _published(self) -> dict[str, Any] | None:
        """The published snapshot's data when it is not the one held; None when there is nothing
        new, or another process is rebuilding it."""
        token = cache.get(VERSION_KEY)
        if token is not None and token == self.current.token:
            return None
        raw = None if token is None else cache.get(SNAPSHOT_KEY.format(token=token))
        if raw is None:
            # Never published, or the version key outlived its snapshot (cache flushed, evicted,
            # restarted empty): rebuild, once for every process.
            return self._rebuild(token)
        return json.loads(raw)

    def _rebuild(self, seen: str | None) -> dict[str, Any] | None:
        """Publish from the database if this process wins the build lock (the snapshot's data);
        None when another process holds it (it is building: the next poll loads its result)."""
        owner = uuid.uuid4().hex
        if not cache.add(BUILD_LOCK_KEY, owner, BUILD_LOCK_TTL):
            self._built_elsewhere = True
            return None
        try:
            # The previous holder may have published between our read and our lock.
            token = cache.get(VERSION_KEY)
            if token is not None and token != seen:
                raw = cache.get(SNAPSHOT_KEY.format(token=token))
                if raw is not None:
                    return json.loads(raw)
            try:
                return _publish()
            finally:
                self._release_db()
        finally:
            # Not atomic with the check; the lock's TTL is far above a read and a delete.
            with contextlib.suppress(Exception):
                if cache.get(BUILD_LOCK_KEY) == owner:
                    cache.delete(BUILD_LOCK_KEY)

    def _publish_owed_change(self) -> None:
        try:
            config_publish()  # still owed if it fails again
        except Exception as exc:
            logger.debug("owed configuration publish failed again: %s", exc)
        else:
            logger.warning("published the configuration saved while the cache was unreachable")
        finally:
            self._release_db()

    @staticmethod
    def _release_db() -> None:
        # Publishing is rare on the data plane: do not keep a database connection per process.
        if not connection.in_atomic_block:
            connection.close()

    def _run(self) -> None:
        while not self._stop.wait(settings.PORTIER_CONFIG_POLL_INTERVAL):
            self.refresh()


holder = SnapshotHolder()
