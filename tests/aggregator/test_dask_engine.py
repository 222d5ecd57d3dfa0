"""The Dask engine: the same input through ``run.engine = dask`` (a two-worker LocalCluster) and through the
local engine stores identical windows (counts, sums, counters and sketch bytes), checkpoints and dead
letters, also for an incremental second run; the CLI's ``--engine dask`` works end to end; an unreachable
scheduler fails the run before its commit."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator import dask_engine
from aggregator.config import load_config
from aggregator.loggen import generate_events, write_log
from aggregator.run import execute

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
NOW = time.time()
START = int(NOW // 60) * 60 - 1800
PART_BYTES = 256 << 10  # many parts per file, so the split, the ordering and the merge are exercised
BAD_LINES = b'{"apm.schema":1,"apm.kind":"request","timestamp":"not a time"}\n{"apm.schema":1,\n'


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as c:
        yield c


def _inputs(tmp: Path) -> list[Path]:
    a, b = tmp / "app.log", tmp / "worker.log"
    write_log(a, generate_events(9000, start=START, seconds=1200, seed=7), ordinary_every=40)
    with open(a, "ab") as f:
        f.write(BAD_LINES)
    write_log(b, generate_events(4000, start=START + 300, seconds=600, seed=8))
    return [a, b]


def _append(paths: list[Path]) -> None:
    write_log(paths[0], generate_events(2000, start=START + 1200, seconds=120, seed=9), ordinary_every=40)
    with open(paths[1], "ab") as f:
        f.write(BAD_LINES)


def _run(paths: list[Path], state: Path, **overrides: Any) -> Any:
    config = load_config(environ={}, overrides={"run.workers": 2, **overrides})
    return execute(config, inputs=[str(p) for p in paths], state_path=state, now=NOW, stages=(),
                   warn=lambda _m: None, part_bytes=PART_BYTES)


def _state(path: Path) -> dict[str, Any]:
    """Everything a run stores that must not depend on the engine (the pipeline's own timing aside)."""
    conn = sqlite3.connect(path)
    try:
        windows = conn.execute(
            "SELECT family, tags, start, width, count, errors, total, min, max, counters, sketch FROM windows "
            "WHERE family != 'pipeline' ORDER BY family, tags, start").fetchall()
        series = conn.execute("SELECT family, tags, first_window FROM series WHERE family != 'pipeline' "
                              "ORDER BY 1, 2").fetchall()
        cps = []
        for identity, path_, data in conn.execute("SELECT identity, path, data FROM checkpoints ORDER BY 1"):
            cp = json.loads(data)
            cp.pop("read_at", None)
            cps.append((identity, path_, cp))
        dead = conn.execute("SELECT source, offset, reason, line FROM dead_letters ORDER BY id").fetchall()
        watermark = conn.execute("SELECT key, value FROM window_state ORDER BY key").fetchall()
    finally:
        conn.close()
    return {"windows": windows, "series": series, "checkpoints": cps, "dead_letters": dead,
            "window_state": watermark}


def test_dask_engine_stores_what_the_local_engine_stores(tmp_path: Path, cluster: Any) -> None:
    """Two files cut into many parts, with ordinary and invalid lines: the Dask run's windows (sketch bytes
    included), series, checkpoints, dead letters and watermark equal the local run's, and so do those of a
    second, incremental run over appended lines."""
    paths = _inputs(tmp_path)
    local, dask = tmp_path / "local.db", tmp_path / "dask.db"
    r_local = _run(paths, local, **{"run.engine": "local"})
    r_dask = _run(paths, dask, **{"run.engine": "dask", "run.dask_scheduler": cluster.scheduler_address})
    assert r_dask.parts == r_local.parts > 4  # really split, and every part came back
    assert (r_dask.lines, r_dask.events, r_dask.skipped, r_dask.invalid) == \
        (r_local.lines, r_local.events, r_local.skipped, r_local.invalid)
    assert r_local.events == 13000 and r_local.invalid_total == 2
    first_local, first_dask = _state(local), _state(dask)
    assert len(first_local["windows"]) > 500
    assert first_dask == first_local

    _append(paths)
    r_local = _run(paths, local, **{"run.engine": "local"})
    r_dask = _run(paths, dask, **{"run.engine": "dask", "run.dask_scheduler": cluster.scheduler_address})
    assert r_dask.events == r_local.events == 2000
    second_local, second_dask = _state(local), _state(dask)
    assert second_local != first_local
    assert second_dask == second_local


def test_dask_engine_keeps_parts_in_input_order(tmp_path: Path, cluster: Any) -> None:
    """The engine yields every planned part once, in (task, part) order, whatever order workers finish in,
    and counts the bytes the parts read for the progress bar."""
    from aggregator.engine import EngineSettings
    from aggregator.sources import FileSource

    paths = _inputs(tmp_path)
    source = FileSource([str(p) for p in paths])
    tasks = source.scan({})
    engine = dask_engine.DaskEngine(source, EngineSettings(now=NOW, workers=2, part_bytes=64 << 10),
                                    scheduler=cluster.scheduler_address)
    order = [(r.task_index, r.part_index) for r in engine.run(tasks)]
    planned = [(ti, pi) for ti, pi, _ in engine.plan(tasks)]
    assert order == planned and len(order) > 10
    assert engine.bytes_done == sum(p.stat().st_size for p in paths)
    assert engine.threads == 2


def test_cli_engine_dask_starts_its_own_local_cluster(tmp_path: Path) -> None:
    """``logapm run --engine dask`` without a scheduler starts a LocalCluster for the run, commits, exits 0,
    and stores the same windows as ``--engine local``."""
    paths = _inputs(tmp_path)
    out = {}
    for engine in ("local", "dask"):
        state = tmp_path / f"{engine}.db"
        proc = subprocess.run(
            [sys.executable, "-m", "aggregator.cli", "run", "--engine", engine, "--workers", "2", "--state",
             str(state), "-q", *[a for p in paths for a in ("--input", str(p))]],
            cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        out[engine] = _state(state)
    assert out["dask"]["windows"] == out["local"]["windows"]
    assert out["dask"]["checkpoints"] == out["local"]["checkpoints"]


def test_unreachable_scheduler_fails_before_the_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scheduler that cannot be reached raises ``DaskEngineError`` and the store keeps no window and no
    checkpoint (the run's one transaction is rolled back)."""
    import socket

    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT", "2s")
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    paths = _inputs(tmp_path)
    state = tmp_path / "s.db"
    with pytest.raises(dask_engine.DaskEngineError):
        _run(paths, state, **{"run.engine": "dask", "run.dask_scheduler": f"tcp://127.0.0.1:{port}"})
    st = _state(state)
    assert st["windows"] == [] and st["checkpoints"] == []


def test_worker_side_file_checks(tmp_path: Path) -> None:
    """On a worker, the same inode under another device number (another mount of a shared filesystem) is
    read as the same file, and a path the worker cannot see fails with ``DaskEngineError`` instead of being
    read as empty (which would commit the run without those lines)."""
    import dataclasses

    from aggregator.sources import FileSource

    log = tmp_path / "app.log"
    write_log(log, generate_events(50, start=START, seconds=60, seed=3))
    (task,) = FileSource([str(log)]).scan({})
    other_mount = dataclasses.replace(task, dev=task.dev + 1)
    assert dask_engine._as_seen_here(other_mount) == task
    assert dask_engine._as_seen_here(task) is task
    with pytest.raises(dask_engine.DaskEngineError, match="shared filesystem"):
        dask_engine._as_seen_here(dataclasses.replace(task, path=str(tmp_path / "not-mounted.log")))
