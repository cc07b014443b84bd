"""deploy/grafana/portier.json, the operators' Grafana dashboard: a dashboard Grafana imports
(a Prometheus datasource variable every panel queries, unique panel ids, a grid without
overlaps), whose every query reads series the gateway exports. Each metric name a query reads,
each label it matches, groups or names in its legend is checked against /metrics of the
production server (gunicorn, multiprocess metrics) after traffic that makes every series appear;
and every metric the gateway defines has a place on the dashboard.

The queries are read by a small PromQL reader below rather than a parser package: the checks
need only names (metrics, labels, functions), and a token it cannot read fails the test.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from routing.config.holder import holder
from routing.models import RateLimitTier, RolePolicy
from routing.observe.metrics import exposition
from tests.conftest import make_route, make_service, publish
from tests.routing.observe.test_metrics import Samples, scrape, settled
from tests.routing.proxy.test_websocket import EchoSocket
from tests.servers import ServerThread, gunicorn_gateway

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "portier.json"
# Labels Prometheus adds to every series of a scrape target: never in the exposition.
TARGET_LABELS = frozenset({"job", "instance"})
# Series Prometheus records itself for each scrape target, with the target labels only.
SCRAPE_SERIES = {"up": frozenset[str]()}
# Grafana's own variables, which a dashboard may use besides those it defines.
GRAFANA_VARIABLES = frozenset(
    {"__all", "__interval", "__interval_ms", "__rate_interval", "__range", "__range_ms"}
)
GRID_WIDTH = 24


# -- Reading PromQL --------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<range>\[[^\]]*\])                    # a range or subquery: [5m], [$__rate_interval]
    | (?P<variable>\$\{\w+\}|\$\w+)            # a Grafana variable outside a string
    | (?P<duration>(?:\d+(?:ms|[smhdwy]))+)    # after offset
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_:][\w:]*)
    | (?P<punct>==|!=|=~|!~|>=|<=|[-+*/%^<>=(){},@])
    """,
    re.VERBOSE,
)
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "count", "stddev", "stdvar", "count_values", "topk"}
    | {"bottomk", "quantile", "limitk", "limit_ratio"}
)
GROUPINGS = frozenset({"by", "without"})
MATCHINGS = frozenset({"on", "ignoring"})  # labels both sides of a binary operator must have
INCLUDES = frozenset({"group_left", "group_right"})  # labels the "one" side brings
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
MATCHER_OPERATORS = frozenset({"=", "!=", "=~", "!~"})


@dataclass(frozen=True)
class Query:
    """What one PromQL expression reads: each selector's metric with the labels its matchers
    name, and the labels each grouping or vector matching needs on the metrics beneath it."""

    selectors: tuple[tuple[str, frozenset[str]], ...]
    groupings: tuple[tuple[frozenset[str], frozenset[str]], ...]  # (labels, metrics)
    included: frozenset[str]  # group_left/right labels: on some metric of the expression

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(metric for metric, _ in self.selectors)


def tokens(expr: str) -> list[tuple[str, str]]:
    found, position = [], 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        assert match is not None, f"cannot read {expr[position:]!r} in {expr!r}"
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            found.append((kind, match.group()))
        position = match.end()
    return found


def read_promql(expr: str) -> Query:
    """An identifier followed by `(` is a function; an aggregation's `by`/`without` labels
    apply to the metrics in its argument; any other identifier that is no keyword is a metric,
    its `{...}` matchers naming its labels."""
    found = tokens(expr)
    selectors: list[tuple[str, frozenset[str]]] = []
    groupings: list[tuple[frozenset[str], int, int]] = []  # labels, the selectors they cover
    matching: set[str] = set()
    included: set[str] = set()
    # Each open parenthesis: the first selector inside it, the labels its aggregation groups
    # by (given before the argument), whether it is an aggregation's argument.
    frames: list[tuple[int, frozenset[str] | None, bool]] = []
    i = 0
    while i < len(found):
        kind, text = found[i]
        following = found[i + 1][1] if i + 1 < len(found) else None
        i += 1
        if text == "(" and kind == "punct":
            frames.append((len(selectors), None, False))
        elif text == ")" and kind == "punct":
            assert frames, f"unbalanced ) in {expr!r}"
            start, labels, aggregation = frames.pop()
            if aggregation and labels is None and i < len(found) and found[i][1] in GROUPINGS:
                labels, i = _label_list(found, i + 1, expr)  # sum (...) by (label)
            if labels:
                groupings.append((labels, start, len(selectors)))
        elif text == "{" and kind == "punct":  # a selector without a name: {__name__="..."}
            matchers, i = _matchers(found, i, expr)
            names = [value for label, value in matchers if label == "__name__"]
            assert len(names) == 1, f"a selector without one metric name in {expr!r}"
            selectors.append((names[0], frozenset(label for label, _ in matchers) - {"__name__"}))
        elif kind != "name" or text in KEYWORDS:
            continue
        elif text in AGGREGATIONS:
            labels = None
            if following in GROUPINGS:
                labels, i = _label_list(found, i + 1, expr)
            assert found[i][1] == "(", f"{text} without its argument in {expr!r}"
            frames.append((len(selectors), labels, True))
            i += 1
        elif text in MATCHINGS:
            labels, i = _label_list(found, i, expr)
            matching |= labels
        elif text in INCLUDES:
            if following == "(":
                labels, i = _label_list(found, i, expr)
                included |= labels
        elif following == "(":  # a function
            frames.append((len(selectors), None, False))
            i += 1
        else:
            matchers = []
            if following == "{":
                matchers, i = _matchers(found, i + 1, expr)
            selectors.append((text, frozenset(label for label, _ in matchers)))
    assert not frames, f"unbalanced ( in {expr!r}"
    every = frozenset(metric for metric, _ in selectors)
    return Query(
        selectors=tuple(selectors),
        groupings=tuple(
            (labels, frozenset(metric for metric, _ in selectors[start:end]))
            for labels, start, end in groupings
        )
        + (((frozenset(matching), every),) if matching else ()),
        included=frozenset(included),
    )


def _label_list(found: list[tuple[str, str]], i: int, expr: str) -> tuple[frozenset[str], int]:
    """The labels of `(a, b)` starting at found[i]; and the index after it."""
    assert found[i][1] == "(", f"a label list expected in {expr!r}"
    labels = set()
    i += 1
    while found[i][1] != ")":
        kind, text = found[i]
        if text != ",":
            assert kind == "name", f"{text!r} in a label list of {expr!r}"
            labels.add(text)
        i += 1
    return frozenset(labels), i + 1


def _matchers(found: list[tuple[str, str]], i: int, expr: str) -> tuple[list[tuple[str, str]], int]:
    """The (label, value) of each matcher from found[i] (after `{`); and the index after `}`."""
    matchers = []
    while found[i][1] != "}":
        if found[i][1] == ",":
            i += 1
            continue
        (kind, label), (_, operator), (value_kind, value) = found[i : i + 3]
        assert kind == "name" and operator in MATCHER_OPERATORS and value_kind == "string", (
            f"a label matcher expected at {found[i : i + 3]} in {expr!r}"
        )
        matchers.append((label, value[1:-1]))
        i += 3
    return matchers, i + 1


def test_the_reader_finds_metrics_labels_and_groupings_and_skips_the_rest():
    query = read_promql(
        'histogram_quantile(0.95, sum by (route, le) (rate(a_bucket{job=~"$job", '
        'route=~"x|y"}[$__rate_interval]))) / on (route) group_left (tier) '
        'max(b_total offset 5m) without (kind) or vector(0) * {__name__="c", code="1"}'
    )

    assert query.selectors == (
        ("a_bucket", frozenset({"job", "route"})),
        ("b_total", frozenset()),
        ("c", frozenset({"code"})),
    )
    assert set(query.groupings) == {
        (frozenset({"route", "le"}), frozenset({"a_bucket"})),
        (frozenset({"kind"}), frozenset({"b_total"})),
        (frozenset({"route"}), frozenset({"a_bucket", "b_total", "c"})),
    }
    assert query.included == {"tier"}


# -- The dashboard -----------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' collapsed panels included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class Reading:
    """One query of the dashboard: where it is, what it reads, the labels its legend names."""

    where: str
    expr: str
    query: Query
    legend: frozenset[str]


def readings(board: dict[str, Any]) -> list[Reading]:
    """Each panel target's query, and each query variable's label_values(selector, label)."""
    found = []
    for panel in panels(board):
        for target in panel.get("targets", []):
            legend = re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", ""))
            query = read_promql(target["expr"])
            found.append(Reading(panel["title"], target["expr"], query, frozenset(legend)))
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        text = variable["query"]
        text = text["query"] if isinstance(text, dict) else text
        match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", text)
        assert match, f"variable {variable['name']}: label_values(selector, label) expected"
        selector, label = match.groups()
        query = read_promql(selector)
        # The label the variable lists must be on its metric, as a grouping's must.
        query = Query(
            query.selectors,
            (*query.groupings, (frozenset({label}), query.metrics)),
            query.included,
        )
        found.append(Reading(f"variable {variable['name']}", text, query, frozenset()))
    return found


def test_it_is_a_dashboard_grafana_imports():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    sources = [v for v in variables.values() if v["type"] == "datasource"]

    assert board["title"] and re.fullmatch(r"[\w-]{1,40}", board["uid"])
    assert board.get("id") is None  # a new dashboard wherever it is imported
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 39
    assert [v["query"] for v in sources] == ["prometheus"]
    datasource = {"type": "prometheus", "uid": "${" + sources[0]["name"] + "}"}
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == datasource, variable["name"]
    # Every variable a query or setting names is one the dashboard defines (or Grafana's own).
    named = set(re.findall(r"\$\{?(\w+)", DASHBOARD.read_text()))
    assert named - variables.keys() - GRAFANA_VARIABLES == set()

    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(board):
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert grid["h"] > 0 and grid["w"] > 0 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["datasource"] == datasource, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == datasource and target["expr"], panel["title"]
    for reading in readings(board):
        assert reading.query.metrics, f"{reading.where}: {reading.expr} reads no metric"


# -- Against a real gateway ------------------------------------------------------------------


@pytest.fixture
def socket_upstream() -> Iterator[ServerThread]:
    server = ServerThread(EchoSocket()).start()
    yield server
    server.stop()


def serve_every_kind_of_route(upstream: str, dead: str, socket_upstream: str) -> None:
    """Routes whose traffic makes every series appear: proxied, cached, rate limited, refused
    for credentials, report-only, failing upstream, WebSocket."""
    service = make_service("dash-api", upstream)
    make_route(service, "/dash-api", name="dash-api")
    make_route(service, "/dash-cached", name="dash-cached", cache={"ttl": 60})
    tier = RateLimitTier.objects.create(name="dash-tier", rate="1/h", key="route")
    make_route(service, "/dash-limited", name="dash-limited", rate_limit_tier=tier)
    anyone = RolePolicy.objects.create(name="dash-anyone", kind=RolePolicy.Kind.AUTHENTICATED)
    make_route(service, "/dash-private", name="dash-private", role_policy=anyone)
    reported = RolePolicy.objects.create(
        name="dash-reported", kind=RolePolicy.Kind.AUTHENTICATED, report_only=True
    )
    make_route(service, "/dash-reported", name="dash-reported", role_policy=reported)
    make_route(make_service("dash-down", dead), "/dash-down", name="dash-down")
    sockets = make_service("dash-socket", socket_upstream)
    make_route(sockets, "/dash-socket", name="dash-socket", websocket=True)
    publish()


def send_traffic(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/dash-api/ok").status_code == 200
        assert http.post("/dash-api/ok", content=b"12345").status_code == 200
        item = f"/dash-cached/{secrets.token_hex(8)}"  # never stored by an earlier run
        cached = [http.get(item).headers.get("x-cache") for _ in range(2)]
        assert cached == ["MISS", "HIT"]
        assert [http.get("/dash-limited").status_code for _ in range(2)] == [200, 429]
        assert http.get("/dash-private").status_code == 401
        assert http.get("/dash-reported").status_code == 200
        assert http.get("/dash-down").status_code == 502
    with connect(url.replace("http://", "ws://") + "/dash-socket", open_timeout=5) as socket:
        socket.send("hello")
        assert socket.recv(timeout=5) == "echo:hello"


def labels_by_series(samples: Samples) -> dict[str, frozenset[str]]:
    """Each series name of the exposition with every label its samples carry."""
    found: dict[str, set[str]] = {}
    for name, labels in samples:
        found.setdefault(name, set()).update(label for label, _ in labels)
    return {name: frozenset(labels) for name, labels in found.items()}


def problems(reading: Reading, exported: dict[str, frozenset[str]]) -> list[str]:
    where = f"{reading.where}: {reading.expr}\n   "
    found = []
    for metric, labels in reading.query.selectors:
        if metric not in exported:
            found.append(f"{where} {metric} is not exported")
        elif missing := labels - exported[metric] - TARGET_LABELS:
            found.append(f"{where} {metric} has no label {sorted(missing)} to match")
    for labels, metrics in reading.query.groupings:
        for metric in metrics & exported.keys():
            if missing := labels - exported[metric] - TARGET_LABELS:
                found.append(f"{where} {metric} has no label {sorted(missing)} to group by")
    known = set(TARGET_LABELS).union(*(exported.get(m, ()) for m in reading.query.metrics))
    if missing := (reading.legend | reading.query.included) - known:
        found.append(f"{where} no metric it reads has the label(s) {sorted(missing)}")
    return found


@pytest.mark.django_db(transaction=True)
def test_its_queries_read_only_series_and_labels_the_gateway_exports(
    upstream, dead_url, socket_upstream
):
    serve_every_kind_of_route(upstream.url, dead_url, socket_upstream.url)
    board_readings = readings(dashboard())
    charted = set().union(*(reading.query.metrics for reading in board_readings))
    charted -= SCRAPE_SERIES.keys()
    token = secrets.token_urlsafe(16)

    # /metrics is for operators: the scrape brings the token, loopback is no operator network.
    ops = {"PORTIER_OPS_TOKEN": token, "PORTIER_OPS_NETWORKS": "192.0.2.0/24"}
    with gunicorn_gateway(**ops) as gateway:
        deadline = time.monotonic() + 10
        while httpx.get(gateway.url + "/health").json()["config"]["token"] != holder.current.token:
            assert time.monotonic() < deadline, "the gateway did not load the configuration"
            time.sleep(0.1)
        send_traffic(gateway.url)
        assert httpx.get(gateway.url + "/metrics").status_code == 403
        samples = settled(
            lambda: scrape(gateway.url, Authorization=f"Bearer {token}"),
            lambda s: charted <= labels_by_series(s).keys(),
        )

    exported = labels_by_series(samples) | SCRAPE_SERIES
    found = [problem for reading in board_readings for problem in problems(reading, exported)]
    assert not found, "\n".join(found)


def test_it_charts_every_metric_the_gateway_defines():
    """A metric added to routing/observe/metrics.py gets a panel (or this test a reason)."""
    text, _ = exposition()
    defined = {
        family.name: family.type
        for family in text_string_to_metric_families(text.decode())
        if family.name.startswith("portier_")
    }
    charted = {m for reading in readings(dashboard()) for m in reading.query.metrics}

    def series(name: str, kind: str) -> set[str]:
        if kind == "counter":
            return {f"{name}_total"}
        if kind == "histogram":
            return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        return {name}

    assert {name for name, kind in defined.items() if not series(name, kind) & charted} == set()
