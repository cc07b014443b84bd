"""Reading the admin dashboard as a person reads it: each route's and service's charts (the values
they draw, the number beside them), the whole gateway's, and the "Failing now" panel."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

ROW = re.compile(
    r'<tr class="traffic-(route|service)" data-(?:route|service)="([^"]*)">(.*?)</tr>', re.S
)
CHART = re.compile(
    r'<figure class="chart" data-metric="(\w+)" data-values="([^"]*)">\s*<figcaption>'
    r'<span class="chart-title">[^<]*</span> <span class="chart-value">([^<]*)</span>',
    re.S,
)
SECTION = r'<section id="{}"[^>]*>(.*?)</section>'


@dataclass
class Chart:
    values: list[float | None]
    headline: str

    @property
    def total(self) -> float:
        return sum(v for v in self.values if v is not None)


@dataclass
class Panel:
    charts: dict[str, Chart]
    text: str

    def __getitem__(self, metric: str) -> Chart:
        return self.charts[metric]


@dataclass
class Page:
    html: str
    routes: dict[str, Panel] = field(default_factory=dict)
    services: dict[str, Panel] = field(default_factory=dict)
    gateway: Panel | None = None
    route: Panel | None = None  # a route's own page
    failing: list[str] = field(default_factory=list)
    failing_text: str = ""


def _charts(text: str) -> dict[str, Chart]:
    return {
        metric: Chart(
            [None if v == "" else float(v) for v in values.split(",")] if values else [],
            html.unescape(headline),
        )
        for metric, values, headline in CHART.findall(text)
    }


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))).strip()


def read(content: str) -> Page:
    page = Page(content)
    for kind, name, cells in ROW.findall(content):
        rows = page.routes if kind == "route" else page.services
        rows[html.unescape(name)] = Panel(_charts(cells), _text(cells))
    for section, attribute in (("dashboard-gateway", "gateway"), ("dashboard-route", "route")):
        found = re.search(SECTION.format(section), content, re.S)
        if found:
            setattr(page, attribute, Panel(_charts(found.group(1)), _text(found.group(1))))
    failing = re.search(SECTION.format("failing-now"), content, re.S)
    if failing:
        page.failing_text = _text(failing.group(1))
        items = re.findall(r"<li[^>]*>(.*?)</li>", failing.group(1), re.S)
        page.failing = [_text(item) for item in items]
    return page
