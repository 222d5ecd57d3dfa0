"""End to end through ``logapm run``: trace insights in the committed store, across two runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_insights_logs import N_PLUS_ONE_ROUTE, Traffic

from aggregator import catalog
from aggregator.cli import main
from aggregator.insights.findings import counters, load_findings
from aggregator.store import Store
from aggregator.windows_store import WindowsStore


def state_of(path: Path) -> tuple[object, ...]:
    store = Store(path)
    try:
        findings = [(f.route, f.fingerprint, f.requests, f.executions, f.max_executions, round(f.time_ms, 6))
                    for f in load_findings(store.conn)]
        aggs = list(WindowsStore(store).windows("trace", 0, 2**40))
        points = sorted((p.metric, p.tags, p.timestamp, round(p.value, 9))
                        for a in aggs for p in catalog.points(a, "apm"))
        return findings, points, counters(store.conn)["pending_events"]
    finally:
        store.close()


def run(log: Path, state: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["run", "--input", str(log), "--state", str(state), "--workers", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_logapm_run_finds_n_plus_one_and_splits_like_one_run(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Two runs over a log appended in between (the boundary inside requests) commit the same findings,
    trace metrics and (empty) pending state as one run over the whole log; the run summary lists the
    N+1 route."""
    base = (int(time.time()) // 60 - 20) * 60  # recent: within the run's lateness
    traffic = Traffic(seed=5, base=base)
    traffic.mixed(120)
    data = traffic.data()
    cut = data.rfind(b"\n", 0, len(data) // 2 + 77) + 1

    whole = tmp_path / "whole.log"
    whole.write_bytes(data)
    out = run(whole, tmp_path / "one.db", capsys)
    assert "N+1 queries" in out and N_PLUS_ONE_ROUTE in out, out
    one = state_of(tmp_path / "one.db")
    assert one[0] and one[0][0][0] == N_PLUS_ONE_ROUTE
    assert one[0][0][2] == len(traffic.n_plus_one())
    assert one[2] == 0

    split = tmp_path / "split.log"
    split.write_bytes(data[:cut])
    run(split, tmp_path / "two.db", capsys)
    first = state_of(tmp_path / "two.db")
    assert first[2] > 0  # a request was cut in half: its queries wait in the store
    with open(split, "ab") as f:
        f.write(data[cut:])
    run(split, tmp_path / "two.db", capsys)
    assert state_of(tmp_path / "two.db") == one
