"""Rate limits, trusted proxies and the shared response cache's Redis timeouts."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from gateway_site.env import env_float, env_list, env_str
from gateway_site.settings.framework import REDIS_URL

# --- Rate limits and load shedding ---------------------------------------------------------------
# Proxies in front of Portier whose X-Forwarded-For is believed (CIDRs, comma-separated). Empty:
# the socket peer is the client, whatever the header says.
PORTIER_TRUSTED_PROXIES = env_list("PORTIER_TRUSTED_PROXIES")
# async: native redis.asyncio calls from the event loop; thread: django-ratelimit's get_usage
# through django-redis, offloaded to a thread. Both count the same keys (bench/ compares them).
# Without Redis, django-ratelimit counts in the in-process cache (one process only).
PORTIER_RATELIMIT_BACKEND = env_str("PORTIER_RATELIMIT_BACKEND", "async")
if PORTIER_RATELIMIT_BACKEND not in {"async", "thread"}:
    raise ImproperlyConfigured("PORTIER_RATELIMIT_BACKEND must be 'async' or 'thread'")
PORTIER_RATELIMIT_REDIS_URL = env_str("PORTIER_RATELIMIT_REDIS_URL", REDIS_URL)
# When Redis cannot count: open = serve (logged, counted), closed = 503 rate_limit_unavailable.
PORTIER_RATELIMIT_FAIL = env_str("PORTIER_RATELIMIT_FAIL", "open")
if PORTIER_RATELIMIT_FAIL not in {"open", "closed"}:
    raise ImproperlyConfigured("PORTIER_RATELIMIT_FAIL must be 'open' or 'closed'")
# Seconds to wait for Redis, and to skip it after a failure before trying again.
PORTIER_RATELIMIT_REDIS_TIMEOUT = env_float("PORTIER_RATELIMIT_REDIS_TIMEOUT", 0.25)
PORTIER_RATELIMIT_RETRY_AFTER_FAILURE = env_float("PORTIER_RATELIMIT_RETRY_AFTER_FAILURE", 1.0)

# The shared response cache (a route's `cache`): seconds to wait for Redis, and how long a miss
# waits for another request already fetching the same answer (here or on another instance)
# before it asks the upstream itself.
PORTIER_CACHE_REDIS_TIMEOUT = env_float("PORTIER_CACHE_REDIS_TIMEOUT", 0.25)
PORTIER_CACHE_COALESCE_WAIT = env_float("PORTIER_CACHE_COALESCE_WAIT", 10.0)
if PORTIER_CACHE_COALESCE_WAIT < 0:
    raise ImproperlyConfigured("PORTIER_CACHE_COALESCE_WAIT must be 0 or more (seconds)")
