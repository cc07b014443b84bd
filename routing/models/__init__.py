"""The gateway's configuration, edited in the Django admin and compiled into a snapshot.

Nothing here is read per request: routing.config turns the enabled rows into a frozen, compiled
view that every process loads from the cache. One module per concern: services and targets,
policies and tiers, routes, the gateway-wide defaults, and the published versions.
"""

from routing.models.access import RateLimitTier, RolePolicy
from routing.models.defaults import GatewayDefaults
from routing.models.routes import (
    HTTP_METHODS,
    ROUTE_EDGE_FIELDS,
    ROUTE_REALTIME_FIELDS,
    Route,
    RouteTierOverride,
)
from routing.models.services import Service, Target, parse_statuses, split_csv
from routing.models.versions import ConfigRevision, ConfigVersion

__all__ = [
    "HTTP_METHODS",
    "ROUTE_EDGE_FIELDS",
    "ROUTE_REALTIME_FIELDS",
    "ConfigRevision",
    "ConfigVersion",
    "GatewayDefaults",
    "RateLimitTier",
    "RolePolicy",
    "Route",
    "RouteTierOverride",
    "Service",
    "Target",
    "parse_statuses",
    "split_csv",
]
