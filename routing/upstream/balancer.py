"""Which target of a service gets the request: the service's balancing algorithm over the targets
that are usable now (routing.upstream.health), static and registered alike.

Every algorithm works from a `Pool`, built once per set of targets and cached on the identity of
the service spec and its registered instances, so a pick costs a few list steps and set lookups.
Counters and in-flight counts are per process; weights are honoured over many requests.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import Counter
from math import gcd

from routing.config.spec import ServiceSpec, TargetSpec
from routing.upstream import health

__all__ = ["in_flight", "peek", "pick"]

# Points per target on the hash ring, for the heaviest weight (lighter targets get fewer): enough
# for an even spread, small enough to build in well under a millisecond.
RING_POINTS = 160
in_flight: Counter[str] = Counter()  # state id -> requests this process has in flight to it


class Pool:
    """One service's targets with what each algorithm precomputes over them."""

    def __init__(self, service: ServiceSpec, registered: tuple[TargetSpec, ...]) -> None:
        self.service = service
        self.registered = registered
        self.targets = targets = service.targets + registered
        # The rotation's next position (round-robin, weighted, least-in-flight's tie-breaking):
        # read by peek without moving it. Picks run on the event loop; two loops (tests) racing
        # lose a step of rotation at worst.
        self.position = 0
        if service.balancing == "weighted":
            self.order = _smooth_weighted_order(targets)
        else:
            self.order = list(range(len(targets)))
        self.ring_hashes: list[int] = []
        self.ring_targets: list[int] = []
        if service.balancing == "consistent_hash" and targets:
            heaviest = max(t.weight for t in targets)
            points = sorted(
                (_hash(f"{t.key}#{n}".encode()), index)
                for index, t in enumerate(targets)
                for n in range(max(1, RING_POINTS * t.weight // heaviest))
            )
            self.ring_hashes = [h for h, _ in points]
            self.ring_targets = [i for _, i in points]

    def pick(self, hash_key: bytes | None, tried: set[str]) -> TargetSpec | None:
        if not self.targets:
            return None
        algorithm = self.service.balancing
        if algorithm == "consistent_hash":
            if hash_key is not None:
                return self._pick_on_ring(_hash(hash_key), tried)
        elif algorithm == "least_in_flight":
            return self._pick_least_in_flight(tried)
        return self._pick_in_order(tried)

    def _pick_in_order(self, tried: set[str]) -> TargetSpec | None:
        order, targets = self.order, self.targets
        n = len(order)
        fallback = None
        for _ in range(n):
            position = self.position
            self.position = position + 1
            target = targets[order[position % n]]
            if target.sid in tried:
                fallback = fallback or target
            elif health.usable(target):
                return target
        return fallback if fallback is not None and health.usable(fallback) else None

    def _pick_least_in_flight(self, tried: set[str]) -> TargetSpec | None:
        # Start the scan at a rotating offset, so ties spread instead of all going to the first.
        start = self.position
        self.position = start + 1
        n = len(self.targets)
        best, best_load = None, 0.0
        for step in range(n):
            target = self.targets[(start + step) % n]
            if target.sid in tried:
                continue
            if target.sid in health.board.down:
                # Ask for a half-open trial, or send the one this process won: skipped silently,
                # an open circuit would never close while another target is up.
                if health.usable(target):
                    return target
                continue
            load = in_flight[target.sid] / target.weight
            if best is None or load < best_load:
                best, best_load = target, load
        if best is not None and health.usable(best):
            return best
        return self._pick_in_order(tried)  # a half-open trial, or only tried targets left

    def _pick_on_ring(self, point: int, tried: set[str]) -> TargetSpec | None:
        # Walk clockwise from the key's point: a target that is out only moves its own keys.
        hashes, owners = self.ring_hashes, self.ring_targets
        start = bisect.bisect(hashes, point)
        seen: set[int] = set()
        fallback = None
        for step in range(len(owners)):
            index = owners[(start + step) % len(owners)]
            if index in seen:
                continue
            seen.add(index)
            target = self.targets[index]
            if target.sid in tried:
                fallback = fallback or target
            elif health.usable(target):
                return target
            if len(seen) == len(self.targets):
                break
        return fallback if fallback is not None and health.usable(fallback) else None


_pools: dict[str, Pool] = {}


def pick(service: ServiceSpec, hash_key: bytes | None, tried: set[str]) -> TargetSpec | None:
    """A usable target of the service, preferring ones this request has not tried; None if none.

    `hash_key` keeps a caller on one target under consistent hashing (None: round-robin)."""
    # The registered tuple is replaced only when the instances change (the monitor), and a
    # new snapshot brings new service objects: identity says when to rebuild.
    registered = health.board.instances.get(service.name, ())
    pool = _pools.get(service.name)
    if pool is None or pool.service is not service or pool.registered is not registered:
        if len(_pools) > 4096:
            _pools.clear()
        pool = _pools[service.name] = Pool(service, registered)
    return pool.pick(hash_key, tried)


def _hash(data: bytes) -> int:
    # Python's hash() differs between processes; every gateway must place a key alike.
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _smooth_weighted_order(targets: tuple[TargetSpec, ...]) -> list[int]:
    """NGINX's smooth weighted round-robin, unrolled into one cycle of target indexes."""
    if not targets:
        return []
    divisor = 0
    for t in targets:
        divisor = gcd(divisor, t.weight)
    weights = [t.weight // divisor for t in targets]
    total = sum(weights)
    if total > 1000:  # keep one cycle short to build; proportions stay within rounding
        weights = [max(1, round(w * 1000 / total)) for w in weights]
        total = sum(weights)
    current = [0] * len(targets)
    order: list[int] = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(targets)), key=current.__getitem__)
        current[best] -= total
        order.append(best)
    return order


def peek(service: ServiceSpec, hash_key: bytes | None) -> TargetSpec | None:
    """The target `pick` would choose for the next request, without choosing it: the route
    tester (routing.api.tester) explains a request this way and must leave no trace, so the
    rotation does not advance, no half-open trial is claimed (a target that is down is skipped,
    where `pick` might send it the trial) and no pool is cached."""
    registered = health.board.instances.get(service.name, ())
    pool = _pools.get(service.name)
    if pool is None or pool.service is not service or pool.registered is not registered:
        pool = Pool(service, registered)
    targets, down = pool.targets, health.board.down
    if not targets:
        return None
    if service.balancing == "consistent_hash" and hash_key is not None:
        owners = pool.ring_targets
        start = bisect.bisect(pool.ring_hashes, _hash(hash_key))
        for step in range(len(owners)):
            target = targets[owners[(start + step) % len(owners)]]
            if target.sid not in down:
                return target
        return None
    start = pool.position
    if service.balancing == "least_in_flight":
        up = [targets[(start + s) % len(targets)] for s in range(len(targets))]
        up = [t for t in up if t.sid not in down]
        return min(up, key=lambda t: in_flight[t.sid] / t.weight) if up else None
    order = pool.order
    for step in range(len(order)):
        target = targets[order[(start + step) % len(order)]]
        if target.sid not in down:
            return target
    return None
