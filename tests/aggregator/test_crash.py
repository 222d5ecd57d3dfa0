"""SIGKILL at random instants: a run killed anywhere and run again counts every line exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runhelp import ROOT, assert_matches

from aggregator.loggen import generate_events, write_log
from parsers.deadletter import read_dead_letters

BAD = b'{"apm.schema":1,"apm.kind":"request","timestamp":"2026-01-01T00:00:00.000Z","duration_ms":-5}\n'


def _cmd(log: Path, state: Path) -> list[str]:
    return [sys.executable, "-m", "aggregator.cli", "run", "--input", str(log), "--state", str(state),
            "--workers", "2", "-q"]


def _env() -> dict[str, str]:
    env = dict(os.environ, APM_PROVIDER="", PYTHONPATH=str(ROOT))
    env.pop("LOGAPM_CONFIG", None)
    return env


def _clean_run(log: Path, state: Path) -> float:
    t0 = time.monotonic()
    for _ in range(60):  # a killed run's lock is released by the kernel; wait if one is still exiting
        proc = subprocess.run(_cmd(log, state), capture_output=True, text=True, env=_env(), timeout=600)
        if proc.returncode != 75:
            break
        time.sleep(0.5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return time.monotonic() - t0


def _kill_trials(tmp_path: Path, trials: int, seed: int) -> None:
    rng = random.Random(seed)
    start = int(time.time() // 60) * 60 - 3000
    per_slice = 6000
    events = generate_events(per_slice * trials, start=start, seconds=2400, seed=seed)
    log, state = tmp_path / "app.log", tmp_path / "state.db"
    # How long a clean run of one slice takes here (a noisy machine: measured, not assumed).
    probe_log, probe_state = tmp_path / "probe.log", tmp_path / "probe.db"
    write_log(probe_log, events[:per_slice])
    duration = _clean_run(probe_log, probe_state)
    bad_lines = 0
    kills = 0
    for trial in range(trials):
        write_log(log, events[trial * per_slice:(trial + 1) * per_slice], ordinary_every=97)
        with open(log, "ab") as f:
            f.write(BAD)
        bad_lines += 1
        proc = subprocess.Popen(_cmd(log, state), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=_env(), start_new_session=True)
        try:
            proc.wait(timeout=rng.uniform(0.05, duration * 1.3))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole run: parent and its decoder workers
            proc.wait()
            kills += 1
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    _clean_run(log, state)
    assert kills > 0, "no trial was killed: the test proved nothing"
    assert_matches(state, events, quantiles=False)
    letters = read_dead_letters(Path(str(state) + ".dead-letters.jsonl"))
    assert len(letters) == bad_lines and len({(d.source, d.offset) for d in letters}) == bad_lines


@pytest.mark.timeout(900)
def test_sigkill_at_random_instants_reduced(tmp_path: Path) -> None:
    """10 runs, each killed (SIGKILL to the process group) at a random instant or left to finish, with new
    lines and an invalid line appended between them; after a final clean run every count equals the
    ground truth and each invalid line is in the dead-letter file once."""
    _kill_trials(tmp_path, trials=10, seed=20261129)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_sigkill_at_random_instants_many(tmp_path: Path) -> None:
    """The long variant: 60 random kills (``FAULT_TRIALS`` sets another number, e.g. a reduced CI run)."""
    _kill_trials(tmp_path, trials=int(os.environ.get("FAULT_TRIALS", "60")), seed=7)
