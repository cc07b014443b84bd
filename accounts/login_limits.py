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

An admin reads and clears one account's counts on its page (`login_lockout`,
`login_lockout_clear`). django-ratelimit names each count by a hash of group, rate, value and
window, so no key pattern finds a username's per-IP counts: each failure also remembers its
address under the username (for the per-username-and-IP window), and those keys are rebuilt from
it. The per-IP count is left alone: it is about the address, not the account.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest
from django_ratelimit.core import (  # private, the pinned 4.1.0's: how a count's key is made
    _get_window,
    _make_cache_key,
    _split_rate,
    get_usage,
)

__all__ = [
    "LoginCount",
    "LoginLockout",
    "LoginRefusal",
    "login_failure_record",
    "login_limit_check",
    "login_lockout",
    "login_lockout_clear",
    "login_username",
]

logger = logging.getLogger("portier.auth")

GROUP_USER_IP = "login-failures-user-ip"
GROUP_USER = "login-failures-user"
GROUP_IP = "login-failures-ip"
# The addresses a username failed from, kept beside the counts for an admin's clearing
# (bounded: a spray from more addresses than this meets the per-username bound anyway).
ADDRESSES_KEY = "rl:login-failure-addresses:{digest}"
ADDRESSES_KEPT = 50


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
        (GROUP_USER_IP, f"{username}|{ip}", settings.PORTIER_LOGIN_FAILURE_RATE),
        (GROUP_USER, username, settings.PORTIER_LOGIN_FAILURE_RATE_USER),
        (GROUP_IP, ip, settings.PORTIER_LOGIN_FAILURE_RATE_IP),
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
    if increment:
        _remember_address(username, ip)
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


# --- One account's counts, for the admin -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginCount:
    """One count of failed sign-ins against an account, in its current window."""

    login: str  # the username or email it was counted under
    address: str  # the client IP, or "" for the per-username count (any address)
    count: int
    limit: int
    seconds_left: int

    @property
    def locked(self) -> bool:
        return self.count >= self.limit


@dataclass(frozen=True, slots=True)
class LoginLockout:
    """An account's failure counts: per username (any address), and per username and each
    address it failed from in the window."""

    counts: tuple[LoginCount, ...]
    user_rate: str
    user_ip_rate: str
    error: str = ""  # the cache did not answer

    @property
    def locked(self) -> bool:
        return any(count.locked for count in self.counts)


def _cache() -> Any:
    return caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]


def _addresses_key(login: str) -> str:
    return ADDRESSES_KEY.format(digest=hashlib.sha256(login.encode()).hexdigest())


def _remember_address(username: str, ip: str) -> None:
    # Read, add, write: two failures at once from two new addresses may keep only one (the
    # forgotten one's count then ends with its window instead of being cleared).
    key = _addresses_key(username)
    addresses = [a for a in (_cache().get(key) or []) if a != ip][-(ADDRESSES_KEPT - 1) :]
    _, period = _split_rate(settings.PORTIER_LOGIN_FAILURE_RATE)
    _cache().set(key, [*addresses, ip], period + 5)


def _count_key(group: str, value: str, rate: str) -> tuple[str, int]:
    """django-ratelimit's key for this count in its current window, and the window's end."""
    _, period = _split_rate(rate)
    window = _get_window(value, period)
    return _make_cache_key(group, window, rate, value, None), window


def _wanted(logins: Iterable[str]) -> list[tuple[str, str, str, str]]:
    """(login, address, group, value) of every count an account has, from the cache's memory of
    the addresses it failed from."""
    logins = sorted({login_username(login) for login in logins if login_username(login)})
    remembered = _cache().get_many([_addresses_key(login) for login in logins])
    wanted = []
    for login in logins:
        wanted.append((login, "", GROUP_USER, login))
        for ip in remembered.get(_addresses_key(login)) or []:
            wanted.append((login, ip, GROUP_USER_IP, f"{login}|{ip}"))
    return wanted


def login_lockout(*, logins: Iterable[str]) -> LoginLockout:
    """The failure counts of an account signed in to as any of `logins` (its username and its
    email: each is counted as typed). Two cache round trips; a cache error is reported, not
    raised."""
    user_rate = settings.PORTIER_LOGIN_FAILURE_RATE_USER
    user_ip_rate = settings.PORTIER_LOGIN_FAILURE_RATE
    try:
        wanted = _wanted(logins)
        keyed = []
        for login, address, group, value in wanted:
            rate = user_ip_rate if address else user_rate
            key, window = _count_key(group, value, rate)
            keyed.append((login, address, rate, key, window))
        found = _cache().get_many([key for *_, key, _ in keyed])
    except Exception as exc:
        logger.warning("failed logins cannot be read: %s", type(exc).__name__)
        return LoginLockout((), user_rate, user_ip_rate, error="the cache did not answer")
    now = int(time.time())
    counts = tuple(
        LoginCount(login, address, int(found.get(key) or 0), _split_rate(rate)[0], window - now)
        for login, address, rate, key, window in keyed
        if not address or found.get(key)  # an address whose count has ended is left out
    )
    return LoginLockout(counts, user_rate, user_ip_rate)


def login_lockout_clear(*, logins: Iterable[str]) -> None:
    """Forget an account's failures: per username, and per username and every remembered
    address. Raises the cache's error (the admin says it could not)."""
    keys = []
    for login, address, group, value in _wanted(logins):
        user_ip = address != ""
        rate = (
            settings.PORTIER_LOGIN_FAILURE_RATE
            if user_ip
            else settings.PORTIER_LOGIN_FAILURE_RATE_USER
        )
        keys.append(_count_key(group, value, rate)[0])
        keys.append(_addresses_key(login))
    _cache().delete_many(keys)
