"""The HTML report without a browser: its figures, its escaping, its charts, the command's behaviour."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from _report_fixtures import EVIL_ROUTES, N_PLUS_ONE_LOOPS, ROUTES, run_pipeline

from aggregator import catalog
from aggregator.cli import main
from aggregator.commands.report import alert_changes
from aggregator.config import load_config
from aggregator.report import collect, write_report
from aggregator.report.data import MAX_POINTS, choose_span
from aggregator.report.model import LineChart, ReportData, Table, Timeline
from aggregator.report.render import render, script_json
from aggregator.store import Store
from aggregator.windows_store import WindowsStore

CONFIG = load_config(environ={})


class _Page(HTMLParser):
    """What a browser's parser would build from the page: elements, attributes, scripts and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[dict[str, str | None]] = []
        self.script_text: list[str] = []
        self.handlers: list[tuple[str, str]] = []
        self.text: list[str] = []
        self.svgs: list[dict[str, str | None]] = []
        self.marks: dict[str, int] = {}
        self._svg: str | None = None
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name, _ in attrs:
            if name.startswith("on"):
                self.handlers.append((tag, name))
        if tag == "script":
            self.scripts.append(a)
            self._in_script = True
        if tag == "svg":
            self.svgs.append(a)
            self._svg = a.get("id") or ""
            self.marks[self._svg] = 0
        if self._svg is not None and "data-mark" in a:
            self.marks[self._svg] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False
        if tag == "svg":
            self._svg = None

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text.append(data)
        else:
            self.text.append(data)


def _parse(html_text: str) -> _Page:
    page = _Page()
    page.feed(html_text)
    page.close()
    return page


def _report(tmp_path: Path, **kw: object) -> tuple[ReportData, str]:
    state, _ = run_pipeline(tmp_path, **kw)  # type: ignore[arg-type]
    with Store(state, readonly=True) as store:
        data = collect(store, config=CONFIG, alerts=alert_changes)
    assert data is not None
    return data, render(data)


@pytest.fixture(scope="module")
def default_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportData, str, Path]:
    """One store made by the pipeline from the default log, shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("report")
    data, page = _report(tmp)
    return data, page, tmp / "state.db"


def _table(data: ReportData, table_id: str) -> Table:
    return next(t for s in data.sections for t in s.tables if t.id == table_id)


def test_script_json_cannot_break_out_of_its_script_element() -> None:
    """The JSON given to the page's script escapes the characters that end a script element, open a
    comment or end a JavaScript line, and still decodes to the same value."""
    value = {"route": "</script><script>alert(1)</script><!--", "amp": "a&b", "ls": "x\u2028y\u2029z"}
    text = script_json(value)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert json.loads(text) == value


def test_hostile_strings_stay_text(tmp_path: Path) -> None:
    """Routes named like markup appear in the page as text only: the parsed page has exactly the report's
    two script elements, no event-handler attribute anywhere, and the literal strings in its text."""
    _, page_html = _report(tmp_path, routes=EVIL_ROUTES)
    page = _parse(page_html)
    assert len(page.scripts) == 2
    assert page.scripts[0].get("type") == "application/json"
    assert page.handlers == []
    text = "".join(page.text)
    for route in EVIL_ROUTES:
        assert route in text, route
    # The JSON block decodes, and carries the hostile names as plain strings.
    blob = json.loads(page.script_text[0])
    names = {s["name"] for c in blob["charts"].values() for s in c["series"]}
    assert any("<script>" in n for n in names)


def test_csp_allows_exactly_the_report_script_and_no_network(default_report: tuple[ReportData, str, Path]) -> None:
    """The page's Content-Security-Policy names the hash of its own script (so it runs) and allows no
    source of anything else: no network fetch is possible from the page."""
    _, page_html, _ = default_report
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page_html)
    assert csp is not None
    policy = csp.group(1).replace("&#x27;", "'")
    script = re.findall(r"<script>(.*?)</script>", page_html, re.S)
    assert len(script) == 1
    digest = base64.b64encode(hashlib.sha256(script[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy
    assert "http://" not in page_html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page_html


def test_every_chart_has_data_marks(default_report: tuple[ReportData, str, Path]) -> None:
    """With every kind of event in the store, each section has charts and each chart draws data marks
    (lines, bars, alert segments), none is an empty frame."""
    data, page_html, _ = default_report
    page = _parse(page_html)
    charts = [s for s in page.svgs if "chart" in (s.get("class") or "")]
    assert len(charts) >= 14
    assert all("empty" not in (s.get("class") or "") for s in charts)
    assert all(page.marks[s.get("id") or ""] > 0 for s in charts), page.marks
    sections = {s.id: s for s in data.sections}
    for name in ("requests", "time", "database", "n-plus-one", "cache", "external", "tasks", "alerts"):
        assert sections[name].charts, name


def test_route_percentiles_are_merged_sketches_within_one_percent(tmp_path: Path) -> None:
    """The routes table's p50/p95/p99 over the whole span come from merging the windows' sketches: each is
    within 1% of numpy's exact (type 7) percentile of every request's duration, never an average."""
    raw: dict[str, list[float]] = {}
    data, _ = _report(tmp_path, raw=raw)
    table = _table(data, "table-routes")
    cols = table.columns
    for row in table.rows:
        route = str(row[cols.index("route")].value)
        values = np.array(raw[route])
        assert row[cols.index("requests")].value == values.size
        for label, q in (("p50", 50), ("p95", 95), ("p99", 99)):
            got = float(row[cols.index(label)].value)  # type: ignore[arg-type]
            exact = float(np.percentile(values, q))
            assert abs(got - exact) <= 0.01 * exact, (route, label, got, exact)


def test_chart_points_are_window_figures_from_the_catalog(default_report: tuple[ReportData, str, Path]) -> None:
    """At one window per point, each p95 point of a route's latency chart is the catalog's p95 of that
    window's stored aggregate."""
    data, _, state = default_report
    chart = next(c for s in data.sections for c in s.charts if isinstance(c, LineChart)
                 and c.title.endswith(ROUTES[0]))
    assert chart.step == 60
    p95 = next(s for s in chart.series if s.name == "p95")
    with Store(state, readonly=True) as store:
        stored = {a.start: a for a in WindowsStore(store).windows("request", chart.start, chart.end,
                                                                  match={"route": ROUTES[0]})}
    assert len(stored) == 20
    for ts, value in p95.points:
        assert value == pytest.approx(catalog.value("request.duration.p95", stored[ts]))


def test_long_spans_are_bucketed_and_keep_exact_counts(tmp_path: Path) -> None:
    """Four hours of windows become at most MAX_POINTS buckets per chart, each the merge of its windows:
    the throughput points still add up to every request in the span."""
    data, _ = _report(tmp_path, minutes=240, rate=(1, 3))
    assert data.step > 60 and (data.end - data.start) // data.step <= MAX_POINTS
    throughput = next(c for s in data.sections for c in s.charts if c.id == "chart-throughput")
    assert isinstance(throughput, LineChart)
    total = sum(v or 0.0 for _, v in throughput.series[0].points) * data.step / 60
    table = _table(data, "table-routes")
    assert total == pytest.approx(sum(int(r[2].value) for r in table.rows))  # type: ignore[arg-type]


def test_alert_timeline_shows_pending_then_firing(default_report: tuple[ReportData, str, Path]) -> None:
    """The alert history the run's alerting stage recorded (the first route turns slow half-way) becomes a
    timeline row for its p95 rule: a pending stretch, then a firing one still open at the end, and the
    firing notification as a mark."""
    data, _, _ = default_report
    timeline = next(c for s in data.sections for c in s.charts if isinstance(c, Timeline))
    row = next(r for r in timeline.rows if r.label == f"api_latency_p95 · {ROUTES[0]}")
    assert [s.state for s in row.segments] == ["pending", "firing"]
    assert row.segments[0].end == row.segments[1].start
    assert row.segments[1].end is None
    assert "firing" in {m.state for m in row.marks}


def test_span_starts_at_the_first_window_with_data(tmp_path: Path) -> None:
    """A 24-hour report of a store with 20 minutes of data covers those 20 minutes, not 23 empty hours."""
    state, _ = run_pipeline(tmp_path)
    with Store(state, readonly=True) as store:
        span = choose_span(WindowsStore(store), 60, 24.0)
    assert span is not None
    assert (span.end - span.start) == 20 * 60 and span.step == 60


def test_command_writes_the_report_atomically(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``logapm report --state S --out F`` writes F (and no temporary file is left beside it), says what it
    wrote, and exits 0."""
    state, _ = run_pipeline(tmp_path)
    out = tmp_path / "out" / "report.html"
    assert main(["report", "--state", str(state), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    assert "wrote" in capsys.readouterr().out


def test_command_reports_a_missing_or_foreign_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store that does not exist, or a SQLite file logging-apm did not create, is a clear error (exit 1),
    and no report is written."""
    out = tmp_path / "r.html"
    assert main(["report", "--state", str(tmp_path / "nope.db"), "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    assert main(["report", "--state", str(foreign), "--out", str(out)]) == 1
    assert "did not create" in capsys.readouterr().err
    assert not out.exists()


def test_empty_store_gives_a_page_that_says_so(tmp_path: Path) -> None:
    """A store with no windows yet still gives a valid page, which tells the reader to run the aggregator."""
    state = tmp_path / "state.db"
    Store(state).close()
    result = write_report(state, tmp_path / "r.html", config=CONFIG)
    assert result.empty
    assert "logapm run" in (tmp_path / "r.html").read_text()


def test_n_plus_one_findings_are_listed_with_their_query(default_report: tuple[ReportData, str, Path]) -> None:
    """The insights' N+1 finding (one route looping over a query in every request) is the one row of the
    N+1 table, with its route, obfuscated query, executions per request, every request of the route and
    an example trace id."""
    data, _, _ = default_report
    table = _table(data, "table-n-plus-one")
    cols = table.columns
    assert len(table.rows) == 1
    row = table.rows[0]
    assert row[cols.index("route")].value == ROUTES[0]
    assert str(row[cols.index("query (obfuscated)")].value).startswith("SELECT * FROM tbl_0")
    assert row[cols.index("executions/request")].value == N_PLUS_ONE_LOOPS
    requests = _table(data, "table-routes").rows
    assert row[cols.index("requests")].value == next(r[2].value for r in requests if r[1].value == ROUTES[0])
    assert re.fullmatch(r"[0-9a-f]{32}", str(row[cols.index("example trace")].value))


def test_line_chart_draws_gaps_and_lone_points() -> None:
    """A bucket without a value breaks the line (two path segments), a value between two gaps is drawn as
    a point, and a chart without any value is an explicitly empty frame, not a blank axis."""
    from aggregator.report.model import Series
    from aggregator.report.svg import line_chart

    pts = ((0, 1.0), (60, 2.0), (120, None), (180, 3.0), (240, None), (300, 4.0), (360, 5.0))
    svg = line_chart(LineChart("c", "t", "ms", 0, 420, 60, (Series("s", pts),)))
    d = re.search(r'data-mark="line" d="([^"]+)"', svg)
    assert d is not None and d.group(1).count("M") == 2
    assert svg.count('data-mark="point"') == 1
    empty = line_chart(LineChart("e", "t", "ms", 0, 420, 60, (Series("s", ((0, None),)),)))
    assert "empty" in empty and "no data" in empty and "data-mark" not in empty


def test_values_are_formatted_for_reading() -> None:
    """Durations switch to seconds at one second, rates are percentages, throughput is per minute."""
    from aggregator.report.svg import fmt, nice_ticks

    assert fmt(512.4, "ms") == "512 ms" and fmt(1240.0, "ms") == "1.24 s" and fmt(3.456, "ms") == "3.46 ms"
    assert fmt(0.0512, "ratio") == "5.1%" and fmt(12.5, "per_min") == "12.5/min" and fmt(None, "ms") == "–"
    ticks = nice_ticks(0.0, 1234.0)
    assert ticks[0] == 0.0 and ticks[-1] >= 1234.0 and len(ticks) <= 8
