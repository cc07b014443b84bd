"""Target health: active probes and passive checks (a circuit breaker), agreed through the cache.

Shared state lives in the cache (Redis in production), a few small entries per target, named by
the target's state id (service + URL, hashed), so every gateway process agrees on it:

- `health:active:<id>`: the last probe's outcome and the good/bad streaks that move the target
  between healthy and unhealthy (thresholds per service). It expires when nobody probes any more.
- `health:circuit:<id>`: present while the target's circuit is open; holds the time after which
  one trial request may go (half-open). A good trial deletes it, a failed one renews it.
- `health:lock:<id>` and `health:trial:<id>`: which process probes the target this interval, and
  which one sends a half-open circuit's single trial; `cache.add` makes each a one-winner race.

The request path never waits on the cache: it reads this process's `Board`, which the monitor
thread rebuilds from the cache every PORTIER_HEALTH_SYNC_INTERVAL. Passive outcomes go through
`observe()`, which changes the board at once and leaves the cache write to the monitor.

While the cache is unreachable the board is not rebuilt: the last known states, circuits and
registered instances stay in force, passive checks go on in each process, and a half-open
circuit's trial is decided by each process alone. When it comes back empty (a Redis without
persistence), what the board knew is kept as long as the lost entries would have lived: probe
states until their expiry, open circuits until half-open, instances until their own TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings
from django.core.cache import cache

from routing import registry, traffic_stats
from routing.snapshot import HealthCheckSpec, ServiceSpec, TargetSpec, holder

__all__ = [
    "Board",
    "TargetHealth",
    "data_plane_start",
    "data_plane_started",
    "forget_trial",
    "monitor",
    "observe",
    "service_targets",
    "target_health",
    "usable",
]

logger = logging.getLogger("portier.health")

ACTIVE_KEY = "health:active:{}"
CIRCUIT_KEY = "health:circuit:{}"
LOCK_KEY = "health:lock:{}"
TRIAL_KEY = "health:trial:{}"
# An open circuit is closed by a good trial request, never by expiry: keep the entry a long time.
CIRCUIT_TTL = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class TargetHealth:
    """One target's state, as /health/services and the admin report it."""

    state: str  # healthy, unhealthy, or unchecked (no active checks, or no probe yet)
    circuit: str  # closed, open or half_open
    checked_at: float | None = None
    latency_ms: float | None = None
    error: str = ""

    @property
    def available(self) -> bool:
        return self.state != "unhealthy" and self.circuit != "open"


@dataclass(frozen=True, slots=True)
class Board:
    """What this process knows about its targets' health; replaced whole by the monitor."""

    down: frozenset[str] = frozenset()  # state ids not to pick: unhealthy or circuit open
    active: dict[str, dict[str, Any]] = field(default_factory=dict)  # state id -> probe state
    circuits: dict[str, float] = field(default_factory=dict)  # state id -> half-open from
    instances: dict[str, tuple[TargetSpec, ...]] = field(default_factory=dict)  # by service
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # state id -> metadata


board = Board()
_instance_expiry: dict[str, float] = {}  # state id of a registered instance -> its entry's expiry
# Passive state, written only on the event loop's thread (the monitor reads it): consecutive
# failures, circuits this process opened (until the cache has them), and half-open trials.
_failures: dict[str, int] = {}
_opened_here: dict[str, float] = {}
_closed_here: set[str] = set()  # closed by a good trial; the cache still says open until flushed
_trials_wanted: set[str] = set()  # half-open targets a request would have picked
_trials_granted: set[str] = set()  # this process won the claim: the next pick is the trial
_trials_in_flight: set[str] = set()
_writes: deque[tuple[str, str]] = deque()  # ("open" / "close" / "release", state id)


def usable(target: TargetSpec) -> bool:
    """May the balancer pick this target now? Takes the half-open trial when this process won it."""
    sid = target.sid
    if sid not in board.down:
        return True
    if sid in _trials_granted:
        _trials_granted.discard(sid)
        _trials_in_flight.add(sid)
        return True
    until = board.circuits.get(sid)
    if until is not None and until <= time.time():
        _trials_wanted.add(sid)  # the monitor claims the trial on its next round
    return False


def observe(service: ServiceSpec, target: TargetSpec, ok: bool) -> None:
    """Count one request's outcome towards the target's circuit (called on the event loop)."""
    sid = target.sid
    if ok:
        if sid in _trials_in_flight:
            _trials_in_flight.discard(sid)
            logger.warning("circuit closed for %s %s: trial succeeded", service.name, target.key)
            _opened_here.pop(sid, None)
            _closed_here.add(sid)
            _writes.append(("close", sid))
            # As the monitor's next round will (least-in-flight reads `down` directly).
            unhealthy = not board.active.get(sid, {}).get("up", True)
            circuits = {k: v for k, v in board.circuits.items() if k != sid}
            _set_board(board.down if unhealthy else board.down - {sid}, circuits)
        elif sid in _failures:
            del _failures[sid]
        return
    trial = sid in _trials_in_flight
    _trials_in_flight.discard(sid)
    if not service.breaker_failures:
        return
    failures = _failures.get(sid, 0) + 1
    if not trial and failures < service.breaker_failures:
        _failures[sid] = failures
        return
    _failures.pop(sid, None)
    _closed_here.discard(sid)
    _opened_here[sid] = time.time() + service.breaker_cooldown
    _writes.append(("open", sid))
    _set_board(board.down | {sid}, {**board.circuits, sid: _opened_here[sid]})
    logger.warning(
        "circuit opened for %s %s for %.1fs", service.name, target.key, service.breaker_cooldown
    )


def forget_trial(target: TargetSpec) -> None:
    """The trial request was abandoned (client gone): free the claim for another trial."""
    if target.sid in _trials_in_flight:
        _trials_in_flight.discard(target.sid)
        _writes.append(("release", target.sid))


def _set_board(down: frozenset[str], circuits: dict[str, float]) -> None:
    global board
    old = board
    board = Board(down, old.active, circuits, old.instances, old.metadata)


def target_health(service: ServiceSpec, target: TargetSpec) -> TargetHealth:
    """The target's state as this process sees it."""
    sid = target.sid
    state = board.active.get(sid) if service.health else None
    until = None if sid in _closed_here else board.circuits.get(sid)
    circuit = "closed" if until is None else ("open" if until > time.time() else "half_open")
    if state is None:
        return TargetHealth(state="unchecked", circuit=circuit)
    return TargetHealth(
        state="healthy" if state.get("up", True) else "unhealthy",
        circuit=circuit,
        checked_at=state.get("checked_at"),
        latency_ms=state.get("latency_ms"),
        error=state.get("error", ""),
    )


def service_targets(service: ServiceSpec) -> tuple[TargetSpec, ...]:
    """The service's static targets, then the instances registered for it."""
    registered = board.instances.get(service.name)
    return service.targets + registered if registered else service.targets


def instance_metadata(target: TargetSpec) -> dict[str, Any]:
    return board.metadata.get(target.sid, {})


class Monitor:
    """The per-process background thread: probes, registry reads and the board's refresh.

    Every process runs one; a cache lock per target decides which process probes it in each
    interval, so N gateways cost an upstream one probe per interval, and checks go on as long as
    any gateway runs, with no extra worker to deploy (docs/design.md).
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._due: dict[str, float] = {}
        self._probing: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._http: httpx.Client | None = None
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self._stop.clear()
            self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="portier-probe")
            self._http = httpx.Client(
                follow_redirects=False, headers={"user-agent": "portier-health-check"}
            )
            self._thread = threading.Thread(
                target=self._run, name="portier-health-monitor", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._http is not None:
            self._http.close()
            self._http = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(settings.PORTIER_HEALTH_SYNC_INTERVAL)

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
            _trials_granted.update(_trials_wanted - _trials_in_flight)
            _trials_wanted.clear()
        else:
            self.last_error = None
        # Apart from health: a failed flush keeps its counts for the next tick (and logs once).
        with contextlib.suppress(Exception):
            traffic_stats.flush()

    @staticmethod
    def _flush_writes() -> None:
        while _writes:
            op, sid = _writes[0]
            if op == "open":
                cache.set(CIRCUIT_KEY.format(sid), _opened_here.get(sid, time.time()), CIRCUIT_TTL)
                cache.delete(TRIAL_KEY.format(sid))
            elif op == "release":
                cache.delete(TRIAL_KEY.format(sid))
            else:
                cache.delete_many([CIRCUIT_KEY.format(sid), TRIAL_KEY.format(sid)])
            _writes.popleft()  # only once written: after a cache error it is retried

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
        if not _trials_wanted:
            return
        wanted = set(_trials_wanted)
        _trials_wanted.difference_update(wanted)
        for service in services:
            for target in service_targets(service):
                if target.sid not in wanted or target.sid in _trials_in_flight:
                    continue
                # The claim expires if the trial never completes (a hung answer, a crash).
                ttl = service.total_timeout or (service.connect_timeout + service.read_timeout)
                if cache.add(TRIAL_KEY.format(target.sid), os.getpid(), ttl + 1):
                    _trials_granted.add(target.sid)


def _record_probe(
    service: str, target: TargetSpec, check: HealthCheckSpec, error: str, latency_ms: float
) -> None:
    # Only the lock holder writes this entry in an interval, so read-modify-write is safe. An
    # entry lost with the cache goes on from the streaks this process last saw.
    key = ACTIVE_KEY.format(target.sid)
    state = cache.get(key) or dict(board.active.get(target.sid) or {"up": True, "ok": 0, "fail": 0})
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
    global board
    previous = board
    now = time.time()
    registered: dict[str, tuple[TargetSpec, ...]] = {}
    metadata: dict[str, dict[str, Any]] = {}
    expiry: dict[str, float] = {}
    checks: dict[str, HealthCheckSpec | None] = {}  # state id -> its service's active checks
    no_breaker: set[str] = set()  # targets of services whose circuit breaker is off
    for service in services:
        # An address already in the pool (a static target, or another registration) is not
        # added twice: it would get a double share of the traffic.
        seen = {t.sid for t in service.targets}
        live = []
        for instance in instances.get(service.name, []):
            if instance.target.sid not in seen:
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
        if until is not None and sid not in _closed_here and sid not in no_breaker:
            circuits[sid] = float(until)
            down.add(sid)
    # The writes are flushed at the start of each round: what the cache now says is the truth,
    # except for circuits opened or closed since (read at the end of the round, below).
    pending = {sid for _, sid in list(_writes)}
    for sid, until in list(_opened_here.items()):
        if sid not in checks or sid in no_breaker or (sid in circuits and sid not in pending):
            _opened_here.pop(sid, None)  # in the cache now, or its target is gone
        else:
            circuits[sid] = until
            down.add(sid)
    _closed_here.intersection_update(pending)
    _instance_expiry.clear()
    _instance_expiry.update(expiry)
    board = Board(
        down=frozenset(down - _closed_here),
        active=active,
        circuits=circuits,
        instances=registered,
        metadata=metadata,
    )


monitor = Monitor()


def data_plane_start() -> None:
    """This process's snapshot refresher and health monitor, started if they are not running.

    The served stack starts both in its lifespan; under runserver and the tests' WSGI client the
    first view that reads them does. Blocking on a first start (it loads the snapshot)."""
    holder.start()
    monitor.start()


async def data_plane_started() -> None:
    """data_plane_start for async views: free once running, else off the event loop."""
    if not (holder.running and monitor.running):
        await asyncio.to_thread(data_plane_start)
