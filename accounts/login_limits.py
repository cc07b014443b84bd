"""The failed sign-in limit shared by /auth/token and the admin's login form.

Only failures count, three ways (django-ratelimit's fixed windows in the cache, as django-axes
and Keycloak count them):

- per username and client IP (PORTIER_LOGIN_FAILURE_RATE, 5/15m): the guesser is stopped;
- per username from any IP (PORTIER_LOGIN_FAILURE_RATE_USER, 20/15m): a distributed guess at one
  account is stopped, yet its owner still signs in from a new IP until that higher bound;
- per IP for any username (PORTIER_LOGIN_FAILURE_RATE_IP, 100/15m): one address spraying many
  accounts is stopped, while the other people behind the same NAT are not locked out by one
  person's five typos (counting per IP alone at 5 did exactly that).

Past a bound, every attempt it covers is refused, the right password included, until the window
ends. A cache that cannot count lets PORTIER_RATELIMIT_FAIL decide, as for the routes' tiers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django_ratelimit.core import get_usage

__all__ = ["LoginRefusal", "login_failure_record", "login_limit_check", "login_username"]

logger = logging.getLogger("portier.auth")


@dataclass(frozen=True, slots=True)
class LoginRefusal:
    """Why a sign-in is refused before its password is checked."""

    status: int  # 429 too many failures, 503 the limit cannot be checked
    code: str
    message: str
    retry_after: int


def login_username(value: object) -> str:
    """The form of a username that is counted: trimmed, lower-cased, bounded."""
    return str(value or "").strip().lower()[:254]


def _usages(request: HttpRequest, username: str, increment: bool) -> list[dict[str, Any]]:
    # The client through trusted proxies (gateway_site.client_address), else the socket peer.
    ip = request.META.get("PORTIER_CLIENT_IP") or request.META.get("REMOTE_ADDR") or "unknown"
    counted = (
        ("login-failures-user-ip", f"{username}|{ip}", settings.PORTIER_LOGIN_FAILURE_RATE),
        ("login-failures-user", username, settings.PORTIER_LOGIN_FAILURE_RATE_USER),
        ("login-failures-ip", ip, settings.PORTIER_LOGIN_FAILURE_RATE_IP),
    )
    usages = [
        get_usage(
            request,
            group=group,
            key=lambda _g, _r, value=value: value,
            rate=rate,
            increment=increment,
        )
        for group, value, rate in counted
    ]
    return [usage for usage in usages if usage is not None]


def login_limit_check(*, request: HttpRequest, username: str) -> LoginRefusal | None:
    """A refusal when one of the three bounds is reached (or cannot be checked and the policy is
    closed); None when the attempt may go on to the password check."""
    try:
        usages = _usages(request, username, increment=False)
    except Exception as exc:  # django-redis and redis-py raise their own connection errors
        logger.warning("failed logins cannot be counted: %s", type(exc).__name__)
        if settings.PORTIER_RATELIMIT_FAIL == "closed":
            return LoginRefusal(
                503, "rate_limit_unavailable", "Sign-in is unavailable; try again soon.", 1
            )
        return None
    blocked = [usage for usage in usages if usage["count"] >= usage["limit"]]
    if not blocked:
        return None
    retry_after = max(int(usage["time_left"]) for usage in blocked) or 1
    return LoginRefusal(
        429, "rate_limited", "Too many failed sign-ins; try again later.", retry_after
    )


def login_failure_record(*, request: HttpRequest, username: str) -> None:
    """Count one failed sign-in in all three ways (best effort: a cache error is logged)."""
    try:
        _usages(request, username, increment=True)
    except Exception as exc:
        logger.warning("failed logins cannot be counted: %s", type(exc).__name__)
