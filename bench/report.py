"""Turn repeated runs into the printed table, the ratios and the JSON file.

Every number in the table is the median over the repetitions, each taken independently (the
p99 shown is the median of the runs' p99s, not the p99 of all requests). Ratios are Portier's
one-worker gateway over each other server of the same scenario, and for `gateway-2w` the
two-worker gateway over the one-worker one.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Row",
    "Sample",
    "find",
    "format_ratios",
    "format_table",
    "ratios",
    "short_reason",
    "write_json",
]


@dataclass
class Sample:
    """One measured wrk run against one server."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_s_per_1k: float | None  # CPU of the serving process(es) per 1000 requests
    peak_rss_mib: float | None  # VmHWM of the serving process during the run
    wrk: dict[str, int] = field(default_factory=dict)


@dataclass
class Row:
    scenario: str
    variant: str  # a server of bench.scenarios.SERVERS
    connections: int
    url: str = ""
    pending: str | None = None
    unavailable: str | None = None  # the peer could not be started (its tools are missing)
    died: str | None = None  # the peer stopped mid-run: its medians are of the reps before
    samples: list[Sample] = field(default_factory=list)

    def median(self, name: str) -> float | None:
        values = [getattr(s, name) for s in self.samples if getattr(s, name) is not None]
        return statistics.median(values) if values else None

    def errors(self) -> int:
        return sum(s.errors for s in self.samples)

    def medians(self) -> dict[str, float | None]:
        names = ("rps", "p50_ms", "p99_ms", "cpu_s_per_1k", "peak_rss_mib")
        return {name: self.median(name) for name in names}


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


HEADER = (
    f"{'scenario':<16} {'server':<17} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'CPU s/1k':>9} {'RSS MiB':>8} {'errors':>7}"
)


def format_table(rows: list[Row]) -> str:
    lines = [HEADER, "-" * len(HEADER)]
    for row in rows:
        start = f"{row.scenario:<16} {row.variant:<17} {row.connections:>5} "
        if row.pending:
            lines.append(start + f"  not built yet ({row.pending})")
            continue
        if row.unavailable:
            lines.append(start + f"  skipped: {short_reason(row.unavailable)}")
            continue
        m = row.medians()
        lines.append(
            start + f"{_num(m['rps'], 0):>9} {_num(m['p50_ms'], 2):>8} {_num(m['p99_ms'], 2):>8} "
            f"{_num(m['cpu_s_per_1k'], 3):>9} {_num(m['peak_rss_mib'], 1):>8} {row.errors():>7}"
        )
        if row.died:
            only = f"{len(row.samples)} rep(s) only"
            lines.append(f"{'':<16}   ({short_reason(row.died)}: medians of {only})")
    return "\n".join(lines)


def find(rows: list[Row], scenario: str, variant: str) -> Row | None:
    for row in rows:
        if row.scenario == scenario and row.variant == variant and row.samples:
            return row
    return None


def short_reason(reason: str) -> str:
    """`node not found: install ...` -> `node not found`; the bench printed the rest at start."""
    return reason.splitlines()[0].split(":", 1)[0][:80]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(rows: list[Row]) -> dict[str, dict[str, float | None]]:
    """Per scenario, `gateway/<server> rps|p99|CPU per request` for every other server measured
    (`gateway-2w/gateway ...` for the two-worker gateway)."""
    out: dict[str, dict[str, float | None]] = {}
    for scenario in dict.fromkeys(row.scenario for row in rows):
        gateway = find(rows, scenario, "gateway")
        if gateway is None:
            continue
        entry: dict[str, float | None] = {}
        for other in rows:
            if other.scenario != scenario or other is gateway or not other.samples:
                continue
            a, b = (other, gateway) if other.variant == "gateway-2w" else (gateway, other)
            name = f"{a.variant}/{b.variant}"
            entry[f"{name} rps"] = _ratio(a.median("rps"), b.median("rps"))
            entry[f"{name} p99"] = _ratio(a.median("p99_ms"), b.median("p99_ms"))
            entry[f"{name} CPU per request"] = _ratio(
                a.median("cpu_s_per_1k"), b.median("cpu_s_per_1k")
            )
        out[scenario] = entry
    return out


def format_ratios(table: dict[str, dict[str, float | None]]) -> str:
    """One line per (scenario, pair): req/s, p99 and CPU per request ratios."""
    header = f"{'scenario':<16} {'Portier / server':<30} {'req/s':>7} {'p99':>7} {'CPU/req':>8}"
    lines = [header, "-" * len(header)]
    for scenario, entry in table.items():
        pairs = dict.fromkeys(key.split(" ", 1)[0] for key in entry)  # "gateway/express"
        for pair in pairs:
            values = [entry.get(f"{pair} {m}") for m in ("rps", "p99", "CPU per request")]
            cells = ["-" if v is None else f"{v:.2f}x" for v in values]
            lines.append(f"{scenario:<16} {pair:<30} {cells[0]:>7} {cells[1]:>7} {cells[2]:>8}")
    return "\n".join(lines)


def write_json(
    path: Path, meta: dict[str, Any], rows: list[Row], extra: dict[str, Any] | None = None
) -> None:
    """`extra`: top-level sections of modes that have no table rows (--soak, --stream-memory)."""
    data = {
        "meta": meta,
        "rows": [{**asdict(row), "median": row.medians()} for row in rows],
        "ratios": ratios(rows),
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
