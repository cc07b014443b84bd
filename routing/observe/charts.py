"""Small charts as inline SVG, drawn on the server: no JavaScript library, nothing from a CDN.

Two shapes: bars (one per minute: requests, error rate, rate-limited answers) and lines (several
series on one scale: latency percentiles). Every chart names its scale (its top value and 0), its
first minute and its last ("now"), and each minute's column carries a `<title>`, which browsers
show as a tooltip and screen readers read. A minute without a value (no requests: no error rate,
no latency) draws nothing rather than a zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

__all__ = ["Size", "bar_chart", "line_chart", "nice_top"]

Value = float | None
Format = Callable[[float], str]


@dataclass(frozen=True, slots=True)
class Size:
    """A chart's box in CSS pixels: the plot plus room for the scale (left) and times (below)."""

    width: int
    height: int
    font: int

    @property
    def left(self) -> int:
        return self.font * 3

    @property
    def bottom(self) -> int:
        return self.font + 4

    @property
    def top(self) -> int:
        return self.font // 2 + 1


LARGE = Size(320, 96, 10)
SMALL = Size(180, 48, 9)


def nice_top(value: float) -> float:
    """The scale's top: `value` rounded up to 1, 2, 2.5 or 5 times a power of ten (1 at least)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # not reached: 10 * power is always enough


def bar_chart(
    values: Sequence[Value],
    labels: Sequence[str],
    *,
    title: str,
    fmt: Format,
    what: str,
    size: Size = SMALL,
    css: str = "",
) -> SafeString:
    """One bar per minute; `labels` are the minutes' times (HH:MM), oldest first; a minute's
    tooltip reads "<time>: <value> <what>"."""
    top = nice_top(max((v for v in values if v is not None), default=0.0))
    plot_w, plot_h = _plot(size)
    step = plot_w / max(len(values), 1)
    columns = []
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        x = size.left + i * step
        bar = ""
        if value:
            h = max(plot_h * value / top, 1.0)
            bar = (
                f'<rect class="bar" x="{x + step * 0.1:.1f}" y="{size.top + plot_h - h:.1f}" '
                f'width="{max(step * 0.8, 1.0):.1f}" height="{h:.1f}"/>'
            )
        tip = f"{label}: {fmt(value)} {what}" if value is not None else f"{label}: no requests"
        columns.append(_column(x, step, size, tip, bar))
    return _svg(title, size, fmt(top), labels, "".join(columns), css)


def line_chart(
    series: Sequence[tuple[str, Sequence[Value]]],
    labels: Sequence[str],
    *,
    title: str,
    fmt: Format,
    size: Size = SMALL,
) -> SafeString:
    """Several series (name, values) on one scale, one line each; gaps where a value is None."""
    top = nice_top(max((v for _, vs in series for v in vs if v is not None), default=0.0))
    plot_w, plot_h = _plot(size)
    step = plot_w / max(len(labels), 1)

    def point(i: int, value: float) -> tuple[float, float]:
        return size.left + (i + 0.5) * step, size.top + plot_h - plot_h * min(value, top) / top

    drawn = []
    for n, (_, values) in enumerate(series):
        runs: list[list[tuple[float, float]]] = [[]]
        for i, value in enumerate(values):
            if value is None:
                runs.append([])
            else:
                runs[-1].append(point(i, value))
        for run in runs:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            if len(run) > 1:
                drawn.append(f'<polyline class="line line-{n}" points="{coords}"/>')
            elif run:
                x, y = run[0]
                drawn.append(f'<circle class="dot line-{n}" cx="{x:.1f}" cy="{y:.1f}" r="1.5"/>')
    columns = []
    for i, label in enumerate(labels):
        found = [(name, vs[i]) for name, vs in series if vs[i] is not None]
        if found:
            tip = f"{label}: " + ", ".join(f"{name} {fmt(v)}" for name, v in found if v is not None)
        else:
            tip = f"{label}: no requests"
        columns.append(_column(size.left + i * step, step, size, tip, ""))
    return _svg(title, size, fmt(top), labels, "".join(drawn) + "".join(columns), "")


def _plot(size: Size) -> tuple[float, float]:
    return size.width - size.left - 2, size.height - size.top - size.bottom


def _column(x: float, step: float, size: Size, tip: str, drawn: str) -> str:
    # A transparent rectangle the whole height of the plot: the tooltip shows anywhere above
    # the minute, not only on a bar a few pixels high.
    return (
        f"<g><title>{escape(tip)}</title>"
        f'<rect class="hit" x="{x:.1f}" y="{size.top}" width="{step:.1f}" '
        f'height="{size.height - size.top - size.bottom}"/>{drawn}</g>'
    )


def _svg(
    title: str, size: Size, top: str, labels: Sequence[str], body: str, css: str
) -> SafeString:
    base = size.height - size.bottom
    first = labels[0] if labels else ""
    axis = (
        f'<line class="axis" x1="{size.left}" y1="{base}" x2="{size.width - 2}" y2="{base}"/>'
        f'<text class="scale" x="{size.left - 3}" y="{size.top + size.font - 2}" '
        f'text-anchor="end">{escape(top)}</text>'
        f'<text class="scale" x="{size.left - 3}" y="{base}" text-anchor="end">0</text>'
        f'<text class="time" x="{size.left}" y="{size.height - 1}">{escape(first)}</text>'
        f'<text class="time" x="{size.width - 2}" y="{size.height - 1}" text-anchor="end">'
        "now</text>"
    )
    return mark_safe(  # noqa: S308 - every text in it went through escape() above
        f'<svg class="chart-svg {escape(css)}" role="img" aria-label="{escape(title)}" '
        f'width="{size.width}" height="{size.height}" viewBox="0 0 {size.width} {size.height}" '
        f'style="font-size:{size.font}px" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{axis}{body}</svg>"
    )
