"""One request's use of a service's targets: admitted, picked, counted and reported in one place.

The forward stage (routing.proxy.stages.forward) opens a `Lease` per request and tells it what
each attempt came to; the lease keeps every book that depends on it: the service's in-flight cap,
the balancer's per-target in-flight counts, and each attempt's outcome, reported once to the
target's passive health (and so to its circuit).
"""

from __future__ import annotations

from collections import Counter

from routing.config.spec import ServiceSpec, TargetSpec
from routing.upstream import balancer, health

__all__ = ["Lease", "Overloaded"]

_admitted: Counter[str] = Counter()  # service name -> requests this process has in flight to it


class Overloaded(Exception):
    """The service already has its cap of requests in flight from this process."""


class Lease:
    """A request's hold on its service and on the one target it is talking to now.

    The service's cap (`max_in_flight`) is per process, on purpose: in-flight requests are this
    process's own connections and memory, the count needs no I/O, and a crashed process cannot
    leak counts into a shared store. The fleet's cap is max_in_flight times the processes.
    """

    __slots__ = ("_admitted", "_reported", "hash_key", "service", "target", "tried")

    def __init__(self, service: ServiceSpec, hash_key: bytes | None = None) -> None:
        cap = service.max_in_flight
        if cap and _admitted[service.name] >= cap:
            raise Overloaded(service.name)
        if cap:
            _admitted[service.name] += 1
        self._admitted = bool(cap)
        self.service = service
        self.hash_key = hash_key
        self.tried: set[str] = set()
        self.target: TargetSpec | None = None  # held: counted in flight until let go
        self._reported = False

    def pick(self) -> TargetSpec | None:
        """Hold a usable target, one not tried yet when there is one; None when none is usable
        (the target held, if any, is then kept)."""
        target = balancer.pick(self.service, self.hash_key, self.tried)
        if target is not None:
            self._let_go()
            self.target = target
            self.tried.add(target.sid)
            self._reported = False
            balancer.in_flight[target.sid] += 1
        return target

    def answered(self, status: int) -> None:
        """The target answered: a failure for its circuit if the status is one the service's
        breaker counts. The target stays held while its answer streams."""
        self._report(ok=status not in self.service.breaker_statuses)

    def failed(self) -> None:
        """The target failed the attempt (refused, timed out, broke): blamed, and let go."""
        self._report(ok=False)
        self._let_go()

    def abandoned(self) -> None:
        """The attempt ended for a reason not the target's (the budget ran out, the client went
        away): let go without blame, and a half-open trial it carried is freed for another."""
        if self.target is not None and not self._reported:
            health.forget_trial(self.target)
        self._let_go()

    def close(self) -> None:
        """The request is over: the target and the service's slot are let go. Idempotent."""
        self._let_go()
        if self._admitted:
            self._admitted = False
            _admitted[self.service.name] -= 1

    def _report(self, *, ok: bool) -> None:
        if self.target is not None and not self._reported:
            self._reported = True
            health.observe(self.service, self.target, ok=ok)

    def _let_go(self) -> None:
        if self.target is not None:
            balancer.in_flight[self.target.sid] -= 1
            self.target = None
