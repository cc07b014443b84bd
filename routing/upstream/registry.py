"""The service registry: instances that register themselves and heartbeat, kept in the cache.

Each instance is one cache entry whose TTL is the instance's own: a heartbeat renews it, and an
instance that stops heartbeating expires on its own (in Redis, by Redis). An index entry per
service lists the instance ids; it is only rewritten on register and deregister, under a short
cache lock, and ids whose entry has expired are pruned then. Registered instances are runtime
state, not configuration: they never enter the database or the configuration snapshot.

An address that is one of the service's static targets cannot be registered: the pool holds it
once, as the static target, so a registration there would be listed by the registry but never
balanced or reported as an instance. Registering one is refused (InstanceIsStaticTarget); an
instance whose address became a static target later (saved in the admin) is left out of the
listing and the pool alike (`is_static_target`), and its heartbeats are refused so it expires.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache

from routing.config.spec import ServiceSpec, TargetSpec, compile_target

__all__ = [
    "Instance",
    "InstanceIsStaticTarget",
    "InstanceOwned",
    "RegistryBusy",
    "RegistryFull",
    "instance_deregister",
    "instance_heartbeat",
    "instance_register",
    "instances_and_lost_indexes",
    "instances_by_service",
    "is_static_target",
    "new_instance_id",
]

INDEX_KEY = "registry:{}"
INSTANCE_KEY = "registry:{}:{}"
LOCK_KEY = "registry-lock:{}"  # outside registry:<service>:<id>, which any id could name
MAX_INSTANCES = 256  # per service: a runaway registrar cannot grow the pool without bound


class RegistryFull(Exception):
    """The service already has MAX_INSTANCES live instances."""


class RegistryBusy(Exception):
    """The service's index lock could not be taken in time."""


class InstanceOwned(Exception):
    """The instance was registered by another caller, who alone may change or remove it."""


class InstanceIsStaticTarget(Exception):
    """The instance's address is one of the service's static targets, which the pool already
    holds: it is served (and reported) as that static target, never as an instance."""


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    service: str
    url: str
    weight: int
    ttl: int
    metadata: dict[str, Any]
    registered_at: float
    heartbeat_at: float
    target: TargetSpec
    owner: str = ""  # who registered it ("<auth method>:<subject>")

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "url": self.url,
            "weight": self.weight,
            "ttl": self.ttl,
            "metadata": self.metadata,
            "registered_at": self.registered_at,
            "heartbeat_at": self.heartbeat_at,
            "owner": self.owner,
        }


def _instance(data: dict[str, Any]) -> Instance:
    return Instance(
        **data, target=compile_target(data["service"], data["url"], data["weight"], data["id"])
    )


def is_static_target(service: ServiceSpec, target: TargetSpec) -> bool:
    """Whether a registered instance's address is one of the service's static targets. The one
    rule for the registry's refusals and listing and for the health board, so they agree."""
    return any(static.key == target.key for static in service.targets)


def instance_register(
    *,
    service: str,
    url: str,
    weight: int = 100,
    ttl: int = 30,
    metadata: dict[str, Any] | None = None,
    instance_id: str = "",
    owner: str = "",
    override: bool = False,
    served: ServiceSpec | None = None,
) -> tuple[Instance, bool]:
    """Register (or re-register) an instance; returns it and whether it is new. Only its owner
    (or an `override`, for admins) may re-register an instance that is still alive. With the
    `served` spec of the service, an address among its static targets is refused."""
    if served is not None and is_static_target(served, compile_target(service, url, weight)):
        raise InstanceIsStaticTarget
    instance_id = instance_id or new_instance_id()
    key = INSTANCE_KEY.format(service, instance_id)
    now = time.time()
    with _index_lock(service):
        ids = _live_ids(service)
        previous = cache.get(key)
        _check_owner(previous, owner, override)
        if previous is None and len(ids) >= MAX_INSTANCES:
            raise RegistryFull
        data = {
            "id": instance_id,
            "service": service,
            "url": url,
            "weight": weight,
            "ttl": ttl,
            "metadata": metadata or {},
            "registered_at": previous["registered_at"] if previous else now,
            "heartbeat_at": now,
            "owner": owner,
        }
        cache.set(key, data, ttl)
        if instance_id not in ids:
            cache.set(INDEX_KEY.format(service), [*ids, instance_id], None)
    return _instance(data), previous is None


def new_instance_id() -> str:
    return uuid.uuid4().hex


def instance_heartbeat(
    *,
    service: str,
    instance_id: str,
    owner: str = "",
    override: bool = False,
    served: ServiceSpec | None = None,
) -> Instance | None:
    """Renew an instance's TTL; None when it has expired or was never registered. With the
    `served` spec, an instance whose address has since become a static target is not renewed
    (InstanceIsStaticTarget): it is no longer balanced as an instance, and expires on its own."""
    key = INSTANCE_KEY.format(service, instance_id)
    data = cache.get(key)
    _check_owner(data, owner, override)
    if data is not None and served is not None and is_static_target(served, _instance(data).target):
        raise InstanceIsStaticTarget
    # touch() renews only an entry that still exists: one that lapsed in between may already be
    # pruned from the index, so it must be registered again rather than silently re-created.
    if data is None or not cache.touch(key, data["ttl"]):
        return None
    data["heartbeat_at"] = time.time()
    cache.set(key, data, data["ttl"])
    return _instance(data)


def instance_deregister(
    *, service: str, instance_id: str, owner: str = "", override: bool = False
) -> bool:
    """Remove an instance at once; False if it was not registered (or had expired)."""
    with _index_lock(service):
        previous = cache.get(INSTANCE_KEY.format(service, instance_id))
        _check_owner(previous, owner, override)
        existed = previous is not None
        cache.delete(INSTANCE_KEY.format(service, instance_id))
        ids = _live_ids(service)
        if instance_id in ids:
            ids.remove(instance_id)
        cache.set(INDEX_KEY.format(service), ids, None)
    return existed


def instances_by_service(services: list[str]) -> dict[str, list[Instance]]:
    """The live instances of each service: two cache round trips whatever the count."""
    return instances_and_lost_indexes(services)[0]


def instances_and_lost_indexes(services: list[str]) -> tuple[dict[str, list[Instance]], set[str]]:
    """The live instances of each service, and the services whose index is not in the cache at
    all. Deregistering the last instance leaves an empty index, so a missing one was lost with
    the cache (a Redis restarted empty, an eviction) or never written: the health monitor keeps
    the instances it last saw there until their own TTL runs out, as their entries would have."""
    if not services:
        return {}, set()
    indexes = cache.get_many([INDEX_KEY.format(s) for s in services])
    keys = [
        INSTANCE_KEY.format(s, i) for s in services for i in indexes.get(INDEX_KEY.format(s), [])
    ]
    found = cache.get_many(keys) if keys else {}
    result: dict[str, list[Instance]] = {s: [] for s in services}
    for key in keys:  # index order: registration order, stable between rounds
        data = found.get(key)
        if data is not None:
            result[data["service"]].append(_instance(data))
    return result, {s for s in services if INDEX_KEY.format(s) not in indexes}


def _check_owner(data: dict[str, Any] | None, owner: str, override: bool) -> None:
    if data is not None and not override and data.get("owner", "") != owner:
        raise InstanceOwned


def _live_ids(service: str) -> list[str]:
    ids: list[str] = cache.get(INDEX_KEY.format(service)) or []
    found = cache.get_many([INSTANCE_KEY.format(service, i) for i in ids]) if ids else {}
    return [i for i in ids if INSTANCE_KEY.format(service, i) in found]


@contextmanager
def _index_lock(service: str) -> Iterator[None]:
    token = uuid.uuid4().hex
    deadline = time.monotonic() + 2.0
    while not cache.add(LOCK_KEY.format(service), token, 5):
        if time.monotonic() > deadline:
            raise RegistryBusy
        time.sleep(0.01)
    try:
        yield
    finally:
        # Not atomic with the check, but the lock's 5 s TTL is far above an index update.
        if cache.get(LOCK_KEY.format(service)) == token:
            cache.delete(LOCK_KEY.format(service))
