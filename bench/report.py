"""Turn repeated runs into the printed table, the ratios and the JSON file.

Every number in the table is the median over the repetitions, each taken independently (the
p99 shown is the median of the runs' p99s, not the p99 of all requests).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Row", "Sample", "format_ratios", "format_table", "ratios", "write_json"]

VARIANTS = ("gateway", "direct", "reference")


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
    variant: str  # "gateway", "direct" or "reference"
    connections: int
    url: str = ""
    pending: str | None = None
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
    f"{'scenario':<16} {'server':<10} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'CPU s/1k':>9} {'RSS MiB':>8} {'errors':>7}"
)


def format_table(rows: list[Row]) -> str:
    lines = [HEADER, "-" * len(HEADER)]
    for row in rows:
        start = f"{row.scenario:<16} {row.variant:<10} {row.connections:>5} "
        if row.pending:
            lines.append(start + f"  not built yet ({row.pending})")
            continue
        m = row.medians()
        lines.append(
            start + f"{_num(m['rps'], 0):>9} {_num(m['p50_ms'], 2):>8} {_num(m['p99_ms'], 2):>8} "
            f"{_num(m['cpu_s_per_1k'], 3):>9} {_num(m['peak_rss_mib'], 1):>8} {row.errors():>7}"
        )
    return "\n".join(lines)


def _find(rows: list[Row], scenario: str, variant: str) -> Row | None:
    for row in rows:
        if row.scenario == scenario and row.variant == variant and row.samples:
            return row
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(rows: list[Row]) -> dict[str, dict[str, float | None]]:
    """gateway/direct per scenario; gateway/reference where the reference was measured."""
    out: dict[str, dict[str, float | None]] = {}
    for scenario in dict.fromkeys(row.scenario for row in rows):
        gateway = _find(rows, scenario, "gateway")
        if gateway is None:
            continue
        entry: dict[str, float | None] = {}
        direct = _find(rows, scenario, "direct")
        if direct is not None:
            entry["gateway/direct rps"] = _ratio(gateway.median("rps"), direct.median("rps"))
            entry["gateway/direct p99"] = _ratio(gateway.median("p99_ms"), direct.median("p99_ms"))
        reference = _find(rows, scenario, "reference")
        if reference is not None:
            entry["gateway/reference rps"] = _ratio(gateway.median("rps"), reference.median("rps"))
            entry["gateway/reference p99"] = _ratio(
                gateway.median("p99_ms"), reference.median("p99_ms")
            )
            entry["gateway/reference CPU per request"] = _ratio(
                gateway.median("cpu_s_per_1k"), reference.median("cpu_s_per_1k")
            )
        out[scenario] = entry
    return out


def format_ratios(table: dict[str, dict[str, float | None]]) -> str:
    lines = []
    for scenario, entry in table.items():
        parts = [
            f"{name} {'-' if value is None else f'{value:.3g}'}" for name, value in entry.items()
        ]
        lines.append(f"{scenario:<16} " + ", ".join(parts))
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
