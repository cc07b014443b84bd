from __future__ import annotations

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    """Every test starts with no login failures counted (django-ratelimit keys start with rl:)."""
    cache.delete_pattern("rl:*")
