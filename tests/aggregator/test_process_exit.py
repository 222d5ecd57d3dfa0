"""``logapm run`` ends its process without the interpreter's teardown (``aggregator.process_exit``): nothing
it printed, committed or wrote may be lost by that, and the fast end is taken only when it is safe."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
from runhelp import ROOT

from aggregator import cli, process_exit
from aggregator.commands import run as run_command
from aggregator.insights.findings import load_open_traces
from aggregator.loggen import generate_events, write_log

BAD = b'{"apm.schema":1,"apm.kind":"request","timestamp":"2026-01-01T00:00:00.000Z","duration_ms":-5}\n'
FAST_MARK = "[os._exit "
# The process as the console script runs it, with os._exit spied on: the spy says on stderr, after
# everything the run printed, that the fast end was taken.
FAST = ("import os, runpy\n"
        "real = os._exit\n"
        "def spy(status):\n"
        f"    os.write(2, b'{FAST_MARK}%d]\\n' % status)\n"
        "    real(status)\n"
        "os._exit = spy\n"
        "runpy.run_module('aggregator.cli', run_name='__main__')\n")
# The process as it ended before: main, then the interpreter's whole teardown.
TEARDOWN = "import sys\nfrom aggregator.cli import main\nsys.exit(main())\n"


def _env() -> dict[str, str]:
    env = dict(os.environ, APM_PROVIDER="", PYTHONPATH=str(ROOT))
    env.pop("LOGAPM_CONFIG", None)
    env.pop("PYTHONUNBUFFERED", None)  # buffered standard streams, as usual: what os._exit would lose unflushed
    return env


def _run(code: str, log: Path, state: Path) -> subprocess.CompletedProcess[str]:
    # stdout and stderr are pipes: what the process buffered there must arrive whole
    return subprocess.run([sys.executable, "-c", code, "run", "--input", str(log), "--state", str(state),
                           "--workers", "2"], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)


def _stored(state: Path) -> dict[str, list[Any]]:
    """What the run committed, without what records the wall clock (update times, the run's own duration)."""
    conn = sqlite3.connect(state)
    try:
        return {
            "windows": conn.execute(
                "SELECT family, tags, start, width, count, errors, total, min, max, counters, sketch FROM windows "
                "WHERE family != 'pipeline' ORDER BY family, tags, start").fetchall(),
            "series": conn.execute("SELECT * FROM series ORDER BY family, tags").fetchall(),
            "checkpoints": [{**json.loads(data), "read_at": None} for (data,) in
                            conn.execute("SELECT data FROM checkpoints ORDER BY identity")],
            "dead_letters": conn.execute("SELECT source, offset, reason, line FROM dead_letters ORDER BY id").fetchall(),
            "open_traces": sorted(ops.part(trace_id) for trace_id, ops in load_open_traces(conn)),
            "outbox": conn.execute("SELECT count(*) FROM outbox").fetchall(),
            "runs": conn.execute("SELECT count(*) FROM runs").fetchall(),
        }
    finally:
        conn.close()


def test_fast_exit_loses_nothing(tmp_path: Path) -> None:
    """A ``logapm run`` process that ends through os._exit printed its whole summary to a pipe, committed
    the same state and wrote the same dead-letter file as one that ends through the interpreter's teardown,
    with the same exit status; and it did take the fast end."""
    start = int(time.time() // 60) * 60 - 3000
    events = generate_events(40_000, start=start, seconds=2400, seed=7)
    log = tmp_path / "app.log"
    write_log(log, events, ordinary_every=97)
    with open(log, "ab") as f:
        f.write(BAD * 3)
    for _attempt in range(3):  # the alert stage evaluates up to the current minute: both runs in one minute
        minute = time.time() // 60
        fast_state, slow_state = tmp_path / f"fast{_attempt}.db", tmp_path / f"slow{_attempt}.db"
        fast = _run(FAST, log, fast_state)
        slow = _run(TEARDOWN, log, slow_state)
        if time.time() // 60 == minute:
            break
    assert slow.returncode == fast.returncode == 0, fast.stderr + slow.stderr
    assert fast.stderr.endswith(f"{FAST_MARK}0]\n") and FAST_MARK not in slow.stderr
    assert fast.stderr[:-len(f"{FAST_MARK}0]\n")] == slow.stderr

    def masked(out: str, state: Path) -> str:
        return re.sub(r" in \d+\.\d\d s$", " in - s", out.replace(str(state), "STATE"), count=1, flags=re.M)

    assert fast.stdout.endswith("\n") and "alerting: " in fast.stdout.splitlines()[-1]
    assert masked(fast.stdout, fast_state) == masked(slow.stdout, slow_state)
    assert _stored(fast_state) == _stored(slow_state)
    assert _stored(fast_state)["dead_letters"]
    fast_dl = Path(str(fast_state) + ".dead-letters.jsonl").read_bytes()
    slow_dl = Path(str(slow_state) + ".dead-letters.jsonl").read_bytes()
    assert fast_dl.count(b"\n") == 3
    assert fast_dl == slow_dl.replace(str(slow_state).encode(), str(fast_state).encode())


class _Exited(Exception):
    pass


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """os._exit and atexit._run_exitfuncs recorded instead of done."""
    yield _spy(monkeypatch)
    process_exit.reset()


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    def fake_exit(status: int) -> None:
        calls.append(("os._exit", status))
        raise _Exited

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(process_exit.atexit, "_run_exitfuncs", lambda: calls.append("atexit"))
    return calls


def test_fast_end_after_finished(spied: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Declared finished, alone: the streams are flushed, the atexit functions run, then os._exit."""
    monkeypatch.setattr(process_exit, "_alone", lambda: True)  # whatever threads earlier tests left running
    out = io.StringIO()
    flushed: list[str] = []
    monkeypatch.setattr(out, "flush", lambda: flushed.append("out"))
    monkeypatch.setattr(sys, "stdout", out)
    process_exit.finished()
    with pytest.raises(_Exited):
        process_exit.end(3)
    assert spied == ["atexit", ("os._exit", 3)]
    assert flushed == ["out", "out"]


def test_ordinary_end_unless_finished(spied: list[Any]) -> None:
    """Without the command's declaration, and after ``main`` began another command, sys.exit as before."""
    with pytest.raises(SystemExit) as exc:
        process_exit.end(0)
    assert exc.value.code == 0
    process_exit.finished()
    with pytest.raises(SystemExit):
        cli.main(["--version"])  # argparse's exit: main reset the declaration on its way in
    with pytest.raises(SystemExit) as exc:
        process_exit.end(2)
    assert exc.value.code == 2 and spied == []


def _declared_yet_ordinary(spied: list[Any]) -> None:
    """The command declares it finished, and the process still ends through sys.exit, with its status."""
    process_exit.finished()
    with pytest.raises(SystemExit) as exc:
        process_exit.end(0)
    assert exc.value.code == 0 and spied == []


def test_ordinary_end_with_another_thread(spied: list[Any]) -> None:
    """Another thread still running: the interpreter's shutdown would join it, so the ordinary end."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        _declared_yet_ordinary(spied)
    finally:
        stop.set()
        thread.join()


def test_ordinary_end_when_stdout_cannot_flush(spied: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that cannot be flushed (a closed pipe): the ordinary end, which reports it as it always did."""
    class Broken(io.StringIO):
        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Broken())
    process_exit.finished()
    with pytest.raises(SystemExit) as exc:
        process_exit.end(0)
    assert exc.value.code == 0 and spied == []


def test_keep_holds_only_when_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``keep`` holds nothing for in-process callers (the run's state is freed as before); once the entry
    armed it, it holds what it is given until the process ends."""
    class State:
        pass

    monkeypatch.setattr(process_exit, "_kept", None)
    state = State()
    ref = weakref.ref(state)
    process_exit.keep(state)
    del state
    assert ref() is None
    process_exit.arm()
    state = State()
    ref = weakref.ref(state)
    process_exit.keep(state)
    del state
    assert ref() is not None


def test_ordinary_end_with_a_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A multiprocessing child still running (a pool or a Dask cluster not shut down): the ordinary end, whose
    multiprocessing hooks deal with it; once the child is gone, the fast end."""
    monkeypatch.setattr(process_exit.threading, "active_count", lambda: 1)  # threads earlier tests left
    monkeypatch.setattr(process_exit, "_finished", False)  # not declared for the tests after this one
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    child = ctx.Process(target=stop.wait)
    child.start()  # before the spy: the child ends through the real os._exit
    spied = _spy(monkeypatch)
    try:
        _declared_yet_ordinary(spied)
    finally:
        stop.set()
        child.join()
    with pytest.raises(_Exited):
        process_exit.end(0)
    assert spied == ["atexit", ("os._exit", 0)]


def test_a_run_that_raised_is_not_finished(spied: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """``logapm run`` raising (not returning a status) declares nothing: its exception ends the process the
    ordinary way, with the traceback, whatever it left open flushed by the teardown."""
    def failing(args: Any) -> int:
        raise RuntimeError("the run failed")

    monkeypatch.setattr(run_command, "_run_command", failing)
    with pytest.raises(RuntimeError, match="the run failed"):
        cli.main(["run", "--input", "nothing.log"])
    with pytest.raises(SystemExit):
        process_exit.end(1)
    assert spied == []


# The logapm process's entry with `main` replaced: numpy imported as a command would, then the OS threads of the
# process counted (OpenBLAS starts its own when numpy loads).
_BLAS_THREADS = ("import os\n"
                 "from aggregator import cli\n"
                 "def main():\n"
                 "    import numpy\n"
                 "    print(len(os.listdir('/proc/self/task')))\n"
                 "    return 0\n"
                 "cli.main = main\n"
                 "cli.entry()\n")


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not os.path.isdir("/proc/self/task"),
                    reason="OpenBLAS starts threads only for further cores; threads counted in /proc")
@pytest.mark.parametrize(("setting", "threads"), [(None, 1), ("2", 2)])
def test_entry_loads_numpy_without_blas_threads(setting: str | None, threads: int) -> None:
    """The ``logapm`` process's numpy starts no OpenBLAS threads (they spin at its import and logapm gives
    them no work), unless OPENBLAS_NUM_THREADS says otherwise; the variable is read as numpy loads."""
    env = _env()
    env.pop("OPENBLAS_NUM_THREADS", None)
    if setting is not None:
        env["OPENBLAS_NUM_THREADS"] = setting
    out = subprocess.run([sys.executable, "-c", _BLAS_THREADS], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == threads
