"""/health/services: each service with each target's health, as this process balances on it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from routing.config.spec import ServiceSpec, Snapshot
from routing.upstream import balancer, health
from routing.upstream.monitor import monitor

__all__ = ["service_report", "services_report"]


def services_report(snapshot: Snapshot) -> tuple[bool, dict[str, Any]]:
    """(every enabled service has an available target, the report)."""
    services = [service_report(s) for s in sorted(snapshot.services.values(), key=_name)]
    ok = all(s["status"] != "unavailable" for s in services)
    return ok, {
        "status": "ok" if ok else "unavailable",
        "time": _iso(datetime.now(UTC).timestamp()),
        "config_version": snapshot.version,
        "health_state_error": monitor.last_error,
        "services": services,
    }


def service_report(service: ServiceSpec) -> dict[str, Any]:
    targets = []
    for target in health.service_targets(service):
        state = health.target_health(service, target)
        targets.append(
            {
                "url": target.key,
                "source": "registered" if target.instance_id else "static",
                "instance_id": target.instance_id or None,
                "metadata": health.instance_metadata(target) if target.instance_id else None,
                "weight": target.weight,
                "available": state.available,
                "state": state.state,
                "circuit": state.circuit,
                "last_check": _iso(state.checked_at),
                "latency_ms": state.latency_ms,
                "error": state.error or None,
                "in_flight": balancer.in_flight.get(target.sid, 0),
            }
        )
    available = sum(1 for t in targets if t["available"])
    if available and available == len(targets):
        status = "healthy"
    elif available:
        status = "degraded"
    else:
        status = "unavailable"
    check = service.health
    return {
        "name": service.name,
        "status": status,
        "balancing": service.balancing,
        "active_checks": check
        and {
            "path": check.path,
            "interval": check.interval,
            "timeout": check.timeout,
            "healthy_threshold": check.healthy_threshold,
            "unhealthy_threshold": check.unhealthy_threshold,
        },
        "circuit_breaker": {
            "failures": service.breaker_failures,
            "cooldown": service.breaker_cooldown,
        }
        if service.breaker_failures
        else None,
        "targets": targets,
    }


def _name(service: ServiceSpec) -> str:
    return service.name


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
