"""Portier's settings. Everything comes from environment variables (see .env.example).

Defaults are for development: SQLite in the project directory and Django's in-process cache, so a
single process works with no other server. Set DATABASE_URL and REDIS_URL to share state between
instances. PORTIER_ENV=production refuses to start with the development secret key or DEBUG on.

One module per concern, gathered here (DJANGO_SETTINGS_MODULE=gateway_site.settings):
framework (Django itself), proxy (the proxy's limits and timeouts), identity (tokens, API keys,
sign-in limits, the management API) and limits (rate limits and the response cache's Redis).
"""

from gateway_site.settings.framework import *  # noqa: F403
from gateway_site.settings.identity import *  # noqa: F403
from gateway_site.settings.limits import *  # noqa: F403
from gateway_site.settings.proxy import *  # noqa: F403
