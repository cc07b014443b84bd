"""The client's address on the gateway's own pages, resolved as the proxy resolves it.

Django sees the socket peer in REMOTE_ADDR; behind a load balancer that is the balancer, so
every sign-in would count against one address and the per-IP limits would lock out everyone.
This middleware resolves the client through PORTIER_TRUSTED_PROXIES (routing.proxy.client_ip,
the proxy's own rule) and keeps it in META["PORTIER_CLIENT_IP"], which the sign-in limiter
(accounts.login_limits) reads. REMOTE_ADDR itself is left as sent.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from routing.proxy.client_ip import resolve_client_ip

__all__ = ["CLIENT_IP_META_KEY", "ClientAddressMiddleware"]

CLIENT_IP_META_KEY = "PORTIER_CLIENT_IP"


class ClientAddressMiddleware:
    """Sets META["PORTIER_CLIENT_IP"] on every request to the gateway's own pages."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
        request.META[CLIENT_IP_META_KEY] = resolve_client_ip(
            request.META.get("REMOTE_ADDR", ""),
            [forwarded.encode("latin-1", "replace")] if forwarded else [],
        )
        return self.get_response(request)
