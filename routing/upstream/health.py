"""What this process knows about its targets' health, and the passive checks (circuit breaker).

The request path never waits on the cache: it reads this process's `Board`, which the monitor
(routing.upstream.monitor) rebuilds from the cache every PORTIER_HEALTH_SYNC_INTERVAL. Passive
outcomes go through `observe()`, which changes the board at once and queues the cache write for
the monitor's next round. A circuit opens after a service's `breaker_failures` failures in a row;
once its cooldown has passed it is half-open: one trial request, won through the cache by one
process, closes it or opens it again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from routing.config.spec import ServiceSpec, TargetSpec

__all__ = [
    "Board",
    "TargetHealth",
    "board",
    "forget_trial",
    "instance_metadata",
    "observe",
    "service_targets",
    "target_health",
    "usable",
]

logger = logging.getLogger("portier.health")


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


board = Board()  # replaced whole, never changed in place: a reader sees one consistent board
# Passive state, written only on the event loop's thread; the monitor (routing.upstream.monitor),
# this state's one other user, flushes the writes, claims the trials and rebuilds the board:
# consecutive failures, circuits this process opened (until the cache has them), trials.
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
