"""Per-route traffic over the last hour, for the admin's dashboard: counted in memory, summed in
the cache, never read from the audit table or the database.

Each finished request adds to this process's counters (`request_finished`, on the event loop, no
I/O): per route and per wall-clock minute, the requests, the errors (status 500 and above: the
gateway's own failures and the upstreams'), a latency histogram with fixed buckets, on a caching
route its cache hits and lookups (every request the response cache decided on: HIT, MISS, STALE or
BYPASS), the answers refused by a rate limit (429 `rate_limited`) and the requests a report-only
policy or tier would have refused (`ctx.would_deny`). The traffic flusher thread moves those
counts into the cache every tick (`flush`); each process adds its own, so the cache holds the sum
over every gateway process. The dashboard (routing.observe.dashboard) reads the minutes back
(`summary`), each minute's row kept whole so it can chart them.

With Redis: one hash per minute, `traffic:<minute>`, with the fields `n:<route>` (requests),
`e:<route>` (errors), `<bucket>:<route>` (latency histogram), `h:<route>` (cache hits),
`c:<route>` (cache lookups), `l:<route>` (rate-limited) and `w:<route>` (would have been
denied), added to with HINCRBY in one MULTI per flush and read with one HGETALL per minute. A
reader skips the fields it does not know, and a field it knows that an older writer did not write
reads as 0. Other caches (LocMem, in the embedded
single-process mode) hold one integer per field, `traffic:<minute>:<route>:<field>`, created with
`cache.add` and added to with `cache.incr`; they cannot list their keys, so the summary asks for
the routes of the current configuration. Entries expire about TTL after they are written.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from django.core.cache import cache as default_cache
from django.core.cache.backends.base import BaseCache

from routing.proxy.context import RequestContext

__all__ = [
    "BOUNDS_MS",
    "CACHE_WINDOW",
    "LONGEST_WINDOW",
    "NO_ROUTE",
    "WINDOW",
    "Counters",
    "RouteTraffic",
    "TrafficSummary",
    "counters",
    "flush",
    "percentile",
    "request_finished",
    "sum_minutes",
    "summary",
]

logger = logging.getLogger("portier.traffic")

NO_ROUTE = "(no route)"  # requests that matched no route; route names are slugs, never this
# Upper bounds of the latency buckets (ms); one more bucket holds everything slower. Adjacent
# bounds differ by at most 1.5x, so a p95 read from them is within that of the true value.
BOUNDS_MS: tuple[float, ...] = (
    *(1, 2, 3, 5, 7.5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750),
    *(1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 60_000),
)
# One row of counts: requests, errors, the histogram's buckets, cache hits and lookups, answers
# refused by a rate limit, and requests a report-only policy or tier would have refused.
BUCKETS = len(BOUNDS_MS) + 1
HITS = 2 + BUCKETS
LOOKUPS = HITS + 1
LIMITED = LOOKUPS + 1
WOULD_DENY = LIMITED + 1
WIDTH = WOULD_DENY + 1
WINDOW = 5  # complete minutes the summary covers by default, before the current one
# The route page's cache hit ratio: the current minute and the 14 before it (15 minutes), all
# still in the cache (TTL), whichever backend wrote them.
CACHE_WINDOW = 14
# The dashboard's hour: the current minute and the 59 before it.
LONGEST_WINDOW = 59
_CACHE_RESULTS = {"HIT": True, "MISS": False, "STALE": False, "BYPASS": False}
KEEP = 10  # minutes of counts a process holds while the cache is unreachable
# Seconds a minute's entries live (Redis: after the last write; others: after the first). A
# minute is written until shortly after it ends, so 65 minutes keep the whole last hour readable.
TTL = 65 * 60
# One hash per minute. `{traffic}` is a Redis Cluster hash tag: every minute's hash lives in
# one slot, so a flush's MULTI/EXEC (several minutes' hashes) is allowed on a Cluster.
KEY = "{{traffic}}:{}"


class Counters:
    """One process's counts that are not in the cache yet, by (minute, route).

    The event loop adds, the monitor thread takes: a lock (uncontended almost always) keeps a
    count from landing in a batch that is already being written.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[int, str], list[int]] = {}
        self._minute = 0  # the newest minute counted: older rows are pruned when it changes

    def add(
        self,
        route: str,
        status: int,
        seconds: float,
        now: float,
        cache_result: str = "",
        *,
        limited: bool = False,
        would_deny: bool = False,
    ) -> None:
        key = (int(now // 60), route)
        hit = _CACHE_RESULTS.get(cache_result)  # None: the cache did not look
        bucket = 2 + bisect_left(BOUNDS_MS, seconds * 1000.0)
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = [0] * WIDTH
                if key[0] > self._minute:
                    # Without a flush (no monitor, or the cache down) memory stays bounded.
                    self._minute = key[0]
                    self._prune()
            row[0] += 1
            if status >= 500:
                row[1] += 1
            row[bucket] += 1
            if hit is not None:
                row[LOOKUPS] += 1
                if hit:
                    row[HITS] += 1
            if limited:
                row[LIMITED] += 1
            if would_deny:
                row[WOULD_DENY] += 1

    def take(self) -> dict[tuple[int, str], list[int]]:
        """Everything counted so far, leaving nothing behind."""
        with self._lock:
            rows, self._rows = self._rows, {}
        return rows

    def give_back(self, rows: dict[tuple[int, str], list[int]]) -> None:
        """Counts a flush could not write, to be tried again with the next one."""
        with self._lock:
            for key, row in rows.items():
                mine = self._rows.get(key)
                if mine is None:
                    self._rows[key] = row
                else:
                    for i, n in enumerate(row):
                        mine[i] += n
            self._minute = max(self._minute, max((m for m, _ in rows), default=0))
            self._prune()

    def _prune(self) -> None:
        oldest = self._minute - KEEP
        for key in [k for k in self._rows if k[0] < oldest]:
            del self._rows[key]


counters = Counters()
_failing = False  # the last flush failed: its warning is logged, not repeated every tick


def request_finished(ctx: RequestContext, error_code: str | None, elapsed: float) -> None:
    """Count one request, once its answer was sent (stage 7, record)."""
    route = ctx.route.name if ctx.route is not None else NO_ROUTE
    counters.add(
        route,
        ctx.status,
        elapsed,
        time.time(),
        ctx.cache_result,
        limited=error_code == "rate_limited",
        would_deny=bool(ctx.would_deny),
    )


def flush(*, source: Counters | None = None, cache: BaseCache | None = None) -> int:
    """Add this process's counts to the cache (the health monitor calls it every tick).

    Returns how many (minute, route) rows were written. On a cache error the counts not written
    stay in `source` for the next flush, and the error is raised.
    """
    global _failing
    source = counters if source is None else source
    cache = default_cache if cache is None else cache
    rows = source.take()
    if not rows:
        return 0
    try:
        client = _redis_client(cache)
        if client is not None:
            _write_hashes(cache, client, rows)
        else:
            _write_keys(cache, rows)
    except Exception as exc:
        source.give_back({k: row for k, row in rows.items() if any(row)})
        if not _failing:
            logger.warning("traffic counts not written to the cache, kept for later: %s", exc)
        _failing = True
        raise
    _failing = False
    return len(rows)


def _redis_client(cache: BaseCache) -> Any | None:
    """django-redis's raw client, when the cache is one (HINCRBY needs it)."""
    get_client = getattr(getattr(cache, "client", None), "get_client", None)
    return get_client(write=True) if get_client is not None else None


# Field names of the row's counts that are not histogram buckets (those are named by number).
_NAMED = {0: "n", 1: "e", HITS: "h", LOOKUPS: "c", LIMITED: "l", WOULD_DENY: "w"}
_NAMED_INDEX = {name: index for index, name in _NAMED.items()}


def _field_name(index: int) -> str:
    return _NAMED.get(index) or str(index - 2)


def _fields(row: Sequence[int]) -> Iterable[tuple[int, str, int]]:
    """The row's non-zero counts as (index in the row, field name, count)."""
    for i, n in enumerate(row):
        if n:
            yield i, _field_name(i), n


def _index(name: str) -> int | None:
    """Where a field name's count goes in a row (None: not a field of this version)."""
    if name in _NAMED_INDEX:
        return _NAMED_INDEX[name]
    return 2 + int(name) if name.isdigit() and int(name) < BUCKETS else None


def _write_hashes(cache: BaseCache, client: Any, rows: dict[tuple[int, str], list[int]]) -> None:
    # All or nothing (MULTI/EXEC); only an answer lost after EXEC ran would count a batch twice.
    pipe = client.pipeline(transaction=True)
    keys = set()
    for (minute, route), row in rows.items():
        key = cache.make_key(KEY.format(minute))
        keys.add(key)
        for _, name, n in _fields(row):
            pipe.hincrby(key, f"{name}:{route}", n)
    for key in keys:
        pipe.expire(key, TTL)
    pipe.execute()


def _field_key(minute: int, route: str, field: str) -> str:
    # Quoted: "(no route)" has a space, which memcached-style key checks warn about.
    return f"{KEY.format(minute)}:{quote(route, safe='')}:{field}"


def _write_keys(cache: BaseCache, rows: dict[tuple[int, str], list[int]]) -> None:
    for (minute, route), row in rows.items():
        for index, name, n in _fields(row):
            key = _field_key(minute, route, name)
            cache.add(key, 0, TTL)
            cache.incr(key, n)
            row[index] = 0  # written: a later failure must not send it again


@dataclass(frozen=True, slots=True)
class RouteTraffic:
    """One route's traffic over the summary's window (or the totals, with route "")."""

    route: str
    per_minute: tuple[int, ...]  # requests in each minute of the window, oldest first
    errors: int
    histogram: tuple[int, ...]
    cache_hits: int = 0  # answers the response cache served fresh (HIT)
    cache_lookups: int = 0  # requests the response cache decided on (HIT, MISS, STALE, BYPASS)
    rate_limited: int = 0  # answers 429 rate_limited
    would_deny: int = 0  # requests a report-only policy or tier would have refused
    # Each minute's whole row of counts (WIDTH each, see `column`), oldest first.
    minutes: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def of(cls, route: str, minutes: Sequence[Sequence[int]]) -> RouteTraffic:
        """The route's traffic from its rows, one per minute of the window (oldest first)."""
        rows = tuple(tuple(row) for row in minutes)
        sums = _column_sums(rows, WIDTH)
        return cls(
            route=route,
            per_minute=tuple(row[0] for row in rows),
            errors=sums[1],
            histogram=sums[2:HITS],
            cache_hits=sums[HITS],
            cache_lookups=sums[LOOKUPS],
            rate_limited=sums[LIMITED],
            would_deny=sums[WOULD_DENY],
            minutes=rows,
        )

    @property
    def requests(self) -> int:
        return sum(self.per_minute)

    @property
    def cache_hit_ratio(self) -> float | None:
        """Hits as a percentage of the cache lookups; None without lookups."""
        return 100.0 * self.cache_hits / self.cache_lookups if self.cache_lookups else None

    @property
    def error_rate(self) -> float:
        """Errors as a percentage of the requests."""
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.histogram, 0.5)

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.histogram, 0.95)


@dataclass(frozen=True, slots=True)
class TrafficSummary:
    """The last `window` minutes and the current one so far, summed over every gateway process."""

    minutes: tuple[int, ...]  # minute numbers (Unix time // 60), oldest first; the last is now
    routes: tuple[RouteTraffic, ...]  # busiest first; only routes with traffic
    total: RouteTraffic


def percentile(histogram: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) of latencies counted in BOUNDS_MS's buckets, in ms: interpolated
    within its bucket; the lower bound for the open-ended last bucket. None without counts."""
    total = sum(histogram)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(histogram):
        if n and seen + n >= rank:
            low = BOUNDS_MS[i - 1] if i else 0.0
            if i == len(BOUNDS_MS):
                return low
            return low + (BOUNDS_MS[i] - low) * (rank - seen) / n
        seen += n
    return BOUNDS_MS[-1]


def summary(
    *,
    routes: Iterable[str] = (),
    now: float | None = None,
    cache: BaseCache | None = None,
    window: int = WINDOW,
) -> TrafficSummary:
    """Read the window back from the cache: one round trip with Redis.

    `routes` names the routes to look for when the cache cannot list what it holds (not Redis);
    `window` is the complete minutes before the current one (at most LONGEST_WINDOW: older ones
    may have expired).
    """
    cache = default_cache if cache is None else cache
    current = int((time.time() if now is None else now) // 60)
    minutes = tuple(range(current - window, current + 1))
    client = _redis_client(cache)
    if client is not None:
        counts = _read_hashes(cache, client, minutes)
    else:
        counts = _read_keys(cache, minutes, [*dict.fromkeys([*routes, NO_ROUTE])])
    empty = (0,) * WIDTH
    rows = []
    for route, by_minute in counts.items():
        row = RouteTraffic.of(route, [by_minute.get(m, empty) for m in minutes])
        if row.requests:
            rows.append(row)
    rows.sort(key=lambda r: (-r.requests, r.route))
    total = RouteTraffic.of("", sum_minutes([r.minutes for r in rows], len(minutes)))
    return TrafficSummary(minutes=minutes, routes=tuple(rows), total=total)


def _column_sums(rows: Sequence[Sequence[int]], width: int) -> tuple[int, ...]:
    return tuple(sum(col) for col in zip(*rows, strict=True)) if rows else (0,) * width


def sum_minutes(
    tables: Sequence[Sequence[Sequence[int]]], length: int
) -> tuple[tuple[int, ...], ...]:
    """Several routes' rows summed minute by minute (`length` minutes of WIDTH counts each)."""
    if not tables:
        return ((0,) * WIDTH,) * length
    return tuple(_column_sums(rows, WIDTH) for rows in zip(*tables, strict=True))


def _read_hashes(
    cache: BaseCache, client: Any, minutes: Sequence[int]
) -> dict[str, dict[int, list[int]]]:
    pipe = client.pipeline(transaction=False)
    for minute in minutes:
        pipe.hgetall(cache.make_key(KEY.format(minute)))
    counts: dict[str, dict[int, list[int]]] = {}
    for minute, fields in zip(minutes, pipe.execute(), strict=True):
        for field, value in fields.items():
            text = field.decode() if isinstance(field, bytes) else field
            name, _, route = text.partition(":")
            index = _index(name)
            if index is None:
                continue  # written by a version with other buckets
            row = counts.setdefault(route, {}).setdefault(minute, [0] * WIDTH)
            row[index] += int(value)
    return counts


def _read_keys(
    cache: BaseCache, minutes: Sequence[int], routes: Sequence[str]
) -> dict[str, dict[int, list[int]]]:
    # Two reads: the request counts, then the other counts of the rows that have some.
    wanted = {_field_key(m, r, "n"): (m, r) for m in minutes for r in routes}
    busy = {wanted[k]: n for k, n in cache.get_many(list(wanted)).items() if n}
    fields = [(i, _field_name(i)) for i in range(1, WIDTH)]
    keys = {_field_key(m, r, f): (m, r, i) for m, r in busy for i, f in fields}
    counts: dict[str, dict[int, list[int]]] = {}
    for (m, r), n in busy.items():
        counts.setdefault(r, {})[m] = [n] + [0] * (WIDTH - 1)
    for key, n in cache.get_many(list(keys)).items():
        m, r, i = keys[key]
        counts[r][m][i] = n
    return counts
