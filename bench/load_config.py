"""Load the bench configuration into the gateway's database and publish it.

Run by bench/run.py with the gateway's environment (its temp SQLite, Redis db and key prefix):
    python bench/load_config.py http://127.0.0.1:PORT
Rows go through full_clean(), as the admin would save them, so an invalid bench route fails here
instead of being silently skipped by the snapshot compiler.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load(upstream_url: str) -> None:
    from django.db import transaction

    from bench.scenarios import BENCH_CACHE, EDGE_CORS, EDGE_TRANSFORM, ROUTES
    from bench.upstream import ENDPOINTS
    from routing.config.publish import config_publish
    from routing.models import RateLimitTier, RolePolicy, Route, Service, Target

    with transaction.atomic():
        service = Service(name="bench-upstream", connect_timeout=5, read_timeout=30, retries=1)
        service.full_clean()
        service.save()
        target = Target(service=service, url=upstream_url, weight=100)
        target.full_clean()
        target.save()
        for spec in ROUTES:
            policy = None
            if spec.policy:
                policy, _ = RolePolicy.objects.get_or_create(
                    name=f"bench-{spec.policy.replace('_', '-')}", defaults={"kind": spec.policy}
                )
            tier = None
            if spec.tier_rate:
                tier = RateLimitTier(name=f"{spec.name}-tier", rate=spec.tier_rate, key="user")
                tier.full_clean()
                tier.save()
            route = Route(
                name=spec.name,
                service=service,
                path=spec.path,
                match_type=Route.MatchType.PREFIX,
                strip_prefix=True,
                rewrite=ENDPOINTS[spec.payload],
                role_policy=policy,
                rate_limit_tier=tier,
                cors=EDGE_CORS if spec.edge else None,
                transform=EDGE_TRANSFORM if spec.edge else {},
                cache=BENCH_CACHE if spec.cache else None,
            )
            route.full_clean()
            route.save()
    token = config_publish()
    print(f"bench: configuration published ({len(ROUTES)} routes, version {token})")


def main() -> None:
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_site.settings")
    import django

    django.setup()
    load(sys.argv[1])


if __name__ == "__main__":
    main()
