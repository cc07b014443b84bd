"""The per-process monitor thread: active probes, the registry's instances, and the board.

Shared state lives in the cache (Redis in production), a few small entries per target, named by
the target's state id (service + URL, hashed), so every gateway process agrees on it:

- `health:active:<id>`: the last probe's outcome and the good/bad streaks that move the target
  between healthy and unhealthy (thresholds per service). It expires when nobody probes any more.
- `health:circuit:<id>`: present while the target's circuit is open; holds the time after which
  one trial request may go (half-open). A good trial deletes it, a failed one renews it.
- `health:lock:<id>` and `health:trial:<id>`: which process probes the target this interval, and
  which one sends a half-open circuit's single trial; `cache.add` makes each a one-winner race.

Each round writes the passive outcomes queued by routing.upstream.health, starts the probes that
are due, claims wanted trials, and rebuilds this process's board from the cache.

While the cache is unreachable the board is not rebuilt: the last known states, circuits and
registered instances stay in force, passive checks go on in each process, and a half-open
circuit's trial is decided by each process alone. When it comes back empty (a Redis without
persistence), what the board knew is kept as long as the lost entries would have lived: probe
states until their expiry, open circuits until half-open, instances until their own TTL.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from django.conf import settings
from django.core.cache import cache

from routing.config.holder import holder
from routing.config.spec import HealthCheckSpec, ServiceSpec, TargetSpec
from routing.periodic import PeriodicThread
from routing.upstream import health, registry
from routing.upstream.health import Board

__all__ = ["ACTIVE_KEY", "CIRCUIT_KEY", "Monitor", "monitor"]

logger = logging.getLogger("portier.health")

ACTIVE_KEY = "health:active:{}"
CIRCUIT_KEY = "health:circuit:{}"
LOCK_KEY = "health:lock:{}"
TRIAL_KEY = "health:trial:{}"
# An open circuit is closed by a good trial request, never by expiry: keep the entry a long time.
CIRCUIT_TTL = 7 * 24 * 3600

_instance_expiry: dict[str, float] = {}  # state id of a registered instance -> its entry's expiry


class Monitor(PeriodicThread):
    """The per-process background thread: probes, registry reads and the board's refresh.

    Every process runs one; a cache lock per target decides which process probes it in each
    interval, so N gateways cost an upstream one probe per interval, and checks go on as long as
    any gateway runs, with no extra worker to deploy (docs/design.md).
    """

    name = "portier-health-monitor"
    tick_first = True

    def __init__(self) -> None:
        super().__init__()
        self._due: dict[str, float] = {}
        self._probing: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._http: httpx.Client | None = None
        self.last_error: str | None = None

    def interval(self) -> float:
        return settings.PORTIER_HEALTH_SYNC_INTERVAL

    def starting(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="portier-probe")
        self._http = httpx.Client(
            follow_redirects=False, headers={"user-agent": "portier-health-check"}
        )

    def stopped(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._http is not None:
            self._http.close()
            self._http = None

    def tick(self) -> None:
        """One round: write passive outcomes, start due probes, claim trials, rebuild the board."""
        services = list(holder.current.services.values())
        try:
            self._flush_writes()
            instances, lost = registry.instances_and_lost_indexes(
                [s.name for s in services if s.allow_registration]
            )
            self._start_probes(services, instances)
            self._claim_trials(services)
            _sync_board(services, instances, lost)
        except Exception as exc:  # the cache is down: keep the board and passive state
            if self.last_error is None:
                logger.warning("health state unavailable, keeping the last known: %s", exc)
            self.last_error = f"{type(exc).__name__}: {exc}"
            # No cache to agree through: rather than keep a half-open target out for the whole
            # outage, each process sends its own trial request.
            health._trials_granted.update(health._trials_wanted - health._trials_in_flight)
            health._trials_wanted.clear()
        else:
            self.last_error = None

    @staticmethod
    def _flush_writes() -> None:
        while health._writes:
            op, sid = health._writes[0]
            if op == "open":
                cache.set(
                    CIRCUIT_KEY.format(sid), health._opened_here.get(sid, time.time()), CIRCUIT_TTL
                )
                cache.delete(TRIAL_KEY.format(sid))
            elif op == "release":
                cache.delete(TRIAL_KEY.format(sid))
            else:
                cache.delete_many([CIRCUIT_KEY.format(sid), TRIAL_KEY.format(sid)])
            health._writes.popleft()  # only once written: after a cache error it is retried

    def _start_probes(
        self, services: list[ServiceSpec], instances: dict[str, list[registry.Instance]]
    ) -> None:
        now = time.monotonic()
        for service in services:
            check = service.health
            if check is None:
                continue
            targets = [*service.targets, *(i.target for i in instances.get(service.name, ()))]
            for target in targets:
                sid = target.sid
                if sid in self._probing or now < self._due.get(sid, 0.0):
                    continue
                self._due[sid] = now + check.interval
                # The lock lives a little less than an interval: the process that probed last
                # finds it free on its next turn, and another takes over if that one dies.
                if not cache.add(LOCK_KEY.format(sid), os.getpid(), check.interval * 0.9):
                    continue
                self._probing.add(sid)
                assert self._pool is not None
                self._pool.submit(self._probe, service.name, target, check)
        if len(self._due) > 100_000:  # targets long gone: forget them, they are re-added lazily
            self._due.clear()

    def _probe(self, service: str, target: TargetSpec, check: HealthCheckSpec) -> None:
        try:
            started = time.perf_counter()
            error = ""
            try:
                assert self._http is not None
                answer = self._http.get(target.key + check.path, timeout=check.timeout)
                if answer.status_code >= 400:
                    error = f"status {answer.status_code}"
            except httpx.HTTPError as exc:
                error = type(exc).__name__ + (f": {exc}" if str(exc) else "")
            latency_ms = round((time.perf_counter() - started) * 1000, 2)
            _record_probe(service, target, check, error, latency_ms)
        except Exception:
            logger.exception("health probe of %s %s could not be recorded", service, target.key)
        finally:
            self._probing.discard(target.sid)

    @staticmethod
    def _claim_trials(services: list[ServiceSpec]) -> None:
        """For half-open circuits that requests here wanted, try to win the one trial request."""
        if not health._trials_wanted:
            return
        wanted = set(health._trials_wanted)
        health._trials_wanted.difference_update(wanted)
        for service in services:
            for target in health.service_targets(service):
                if target.sid not in wanted or target.sid in health._trials_in_flight:
                    continue
                # The claim expires if the trial never completes (a hung answer, a crash).
                ttl = service.total_timeout or (service.connect_timeout + service.read_timeout)
                if cache.add(TRIAL_KEY.format(target.sid), os.getpid(), ttl + 1):
                    health._trials_granted.add(target.sid)


def _record_probe(
    service: str, target: TargetSpec, check: HealthCheckSpec, error: str, latency_ms: float
) -> None:
    # Only the lock holder writes this entry in an interval, so read-modify-write is safe. An
    # entry lost with the cache goes on from the streaks this process last saw.
    key = ACTIVE_KEY.format(target.sid)
    state = cache.get(key) or dict(
        health.board.active.get(target.sid) or {"up": True, "ok": 0, "fail": 0}
    )
    if error:
        state["fail"], state["ok"] = state["fail"] + 1, 0
        if state["up"] and state["fail"] >= check.unhealthy_threshold:
            state["up"] = False
            logger.warning("target %s of %s is unhealthy: %s", target.key, service, error)
    else:
        state["ok"], state["fail"] = state["ok"] + 1, 0
        if not state["up"] and state["ok"] >= check.healthy_threshold:
            state["up"] = True
            logger.warning("target %s of %s is healthy again", target.key, service)
    state.update(checked_at=time.time(), latency_ms=latency_ms, error=error)
    cache.set(key, state, _active_ttl(check))


def _active_ttl(check: HealthCheckSpec) -> float:
    # Outlives a missed probe or two; once no gateway probes it, the target is unchecked again.
    return check.interval * 3 + check.timeout + 5


def _lost_state(
    last: dict[str, Any] | None, check: HealthCheckSpec, now: float
) -> dict[str, Any] | None:
    """The last known probe state of a target whose entry is missing from the cache although it
    would still live: lost with the cache (a Redis restarted empty), not expired."""
    if last is not None and last.get("checked_at", 0.0) + _active_ttl(check) > now:
        return last
    return None


def _sync_board(
    services: list[ServiceSpec],
    instances: dict[str, list[registry.Instance]],
    lost_indexes: set[str],
) -> None:
    """Rebuild this process's board from the cache: probe states, circuits, instances."""
    previous = health.board
    now = time.time()
    registered: dict[str, tuple[TargetSpec, ...]] = {}
    metadata: dict[str, dict[str, Any]] = {}
    expiry: dict[str, float] = {}
    checks: dict[str, HealthCheckSpec | None] = {}  # state id -> its service's active checks
    no_breaker: set[str] = set()  # targets of services whose circuit breaker is off
    for service in services:
        # An address already in the pool is not added twice: it would get a double share of the
        # traffic. A static target's address is refused at registration and left out of the
        # registry's listing by the same rule (registry.is_static_target), so the views agree.
        seen: set[str] = set()
        live = []
        for instance in instances.get(service.name, []):
            if instance.target.sid not in seen and not registry.is_static_target(
                service, instance.target
            ):
                seen.add(instance.target.sid)
                live.append(instance)
        targets = tuple(i.target for i in live)
        for instance in live:
            metadata[instance.target.sid] = instance.metadata
            expiry[instance.target.sid] = instance.heartbeat_at + instance.ttl
        if service.name in lost_indexes:
            # The registry was lost with the cache: what was seen lives out its own TTL (an
            # instance's next heartbeat is refused, and it registers again).
            targets = tuple(
                t
                for t in previous.instances.get(service.name, ())
                if _instance_expiry.get(t.sid, 0.0) > now
                and not registry.is_static_target(service, t)
            )
            for target in targets:
                metadata[target.sid] = previous.metadata.get(target.sid, {})
                expiry[target.sid] = _instance_expiry[target.sid]
        # Keep the same tuple while nothing changed: the balancer caches its pool on identity.
        old = previous.instances.get(service.name, ())
        registered[service.name] = old if old == targets else targets
        for target in service.targets + targets:
            checks[target.sid] = service.health
            if not service.breaker_failures:
                no_breaker.add(target.sid)
    keys = [ACTIVE_KEY.format(sid) for sid in checks] + [CIRCUIT_KEY.format(sid) for sid in checks]
    found = cache.get_many(keys) if keys else {}
    active: dict[str, dict[str, Any]] = {}
    circuits: dict[str, float] = {}
    down: set[str] = set()
    for sid, check in checks.items():
        state = found.get(ACTIVE_KEY.format(sid))
        if state is None and check is not None:
            state = _lost_state(previous.active.get(sid), check, now)
        if state is not None and check is not None:
            active[sid] = state
            if not state.get("up", True):
                down.add(sid)
        until = found.get(CIRCUIT_KEY.format(sid))
        if until is None and previous.circuits.get(sid, 0.0) > now:
            # Only a good trial closes a circuit, and only a half-open one has trials: a fully
            # open circuit missing from the cache was lost with it.
            until = previous.circuits[sid]
        # A breaker turned off in the admin lets its open circuits go at once.
        if until is not None and sid not in health._closed_here and sid not in no_breaker:
            circuits[sid] = float(until)
            down.add(sid)
    # The writes are flushed at the start of each round: what the cache now says is the truth,
    # except for circuits opened or closed since (read at the end of the round, below).
    pending = {sid for _, sid in list(health._writes)}
    for sid, until in list(health._opened_here.items()):
        if sid not in checks or sid in no_breaker or (sid in circuits and sid not in pending):
            health._opened_here.pop(sid, None)  # in the cache now, or its target is gone
        else:
            circuits[sid] = until
            down.add(sid)
    health._closed_here.intersection_update(pending)
    _instance_expiry.clear()
    _instance_expiry.update(expiry)
    health.board = Board(
        down=frozenset(down - health._closed_here),
        active=active,
        circuits=circuits,
        instances=registered,
        metadata=metadata,
    )


monitor = Monitor()
