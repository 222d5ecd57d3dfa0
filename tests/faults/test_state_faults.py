"""A run against a broken environment: a full disk (a small tmpfs when we may mount one, and RLIMIT_FSIZE
which works anywhere), a read-only state directory, a corrupted or foreign state file, a missing input, an
input replaced by a directory. Each: a clear error naming the problem, a non-zero exit, and no partial
state (the store's content is what it was before the run; a later good run counts everything once)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runhelp import ROOT, assert_matches

from aggregator.loggen import generate_events, write_log

BASE = int(time.time()) // 60 * 60 - 3 * 3600
BAD = b'{"apm.schema":1,"apm.kind":"request","timestamp":"2026-01-01T00:00:00.000Z","duration_ms":-5}\n'


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOGAPM_", "DATADOG_", "NEW_RELIC_"))}
    return {**env, "APM_PROVIDER": "", "PYTHONPATH": str(ROOT), "LOGAPM_WORKERS": "1"}


def logapm_run(state: Path, *inputs: Path, fsize: int | None = None, extra: tuple[str, ...] = ()
               ) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "aggregator.cli", "run", "--state", str(state), "--no-progress", *extra]
    for i in inputs:
        args += ["--input", str(i)]

    def limit() -> None:  # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=300, cwd=ROOT,
                          preexec_fn=limit)


def content(state: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table: what "no partial state" compares."""
    with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")]
        return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _events(n: int, seed: int) -> list[dict[str, object]]:
    return generate_events(n, start=BASE, seconds=3600, seed=seed)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at ``path`` (root only; skipped where mounting is not allowed)."""
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the RLIMIT_FSIZE test covers this")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_tmpfs_then_space_freed(tmp_path: Path) -> None:
    """A state store on a 2 MB tmpfs that a big run cannot fit: exit 1 naming the store and the full disk,
    the store exactly as before (integrity ok); after the disk grows, one run counts everything once."""
    small, big = _events(300, 1), _events(60_000, 2)
    write_log(tmp_path / "a.log", small)
    write_log(tmp_path / "b.log", big)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        state = disk / "state.db"
        first = logapm_run(state, tmp_path / "a.log")
        assert first.returncode == 0, first.stderr
        before = content(state)
        full = logapm_run(state, tmp_path / "a.log", tmp_path / "b.log")
        assert full.returncode == 1, full.stdout + full.stderr
        assert str(state) in full.stderr and "full" in full.stderr, full.stderr
        assert "Traceback" not in full.stderr
        assert content(state) == before
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
        again = logapm_run(state, tmp_path / "a.log", tmp_path / "b.log")
        assert again.returncode == 0, again.stdout + again.stderr
        assert_matches(state, small + big, quantiles=False)


def test_full_disk_file_size_limit(tmp_path: Path) -> None:
    """The same with RLIMIT_FSIZE (no mount needed): a write past the limit fails (EFBIG) in the middle of
    the run's transaction; exit 1 naming the store, nothing changed, a later run counts everything once."""
    small, big = _events(300, 3), _events(40_000, 4)
    write_log(tmp_path / "a.log", small)
    write_log(tmp_path / "b.log", big)
    state = tmp_path / "state.db"
    assert logapm_run(state, tmp_path / "a.log").returncode == 0
    before = content(state)
    limit = max(p.stat().st_size for p in tmp_path.glob("state.db*")) + 256 * 1024
    full = logapm_run(state, tmp_path / "a.log", tmp_path / "b.log", fsize=limit)
    assert full.returncode == 1, full.stdout + full.stderr
    assert str(state) in full.stderr and "Traceback" not in full.stderr, full.stderr
    assert content(state) == before
    again = logapm_run(state, tmp_path / "a.log", tmp_path / "b.log")
    assert again.returncode == 0, again.stderr
    assert_matches(state, small + big, quantiles=False)


def test_dead_letter_file_on_full_disk(tmp_path: Path) -> None:
    """The dead-letter file on a full 64 KB tmpfs: the run commits, says which file could not be written
    and exits 3; once there is room, the next run writes every dead letter exactly once."""
    log = tmp_path / "bad.log"
    log.write_bytes(BAD * 3000)
    with tmpfs(tmp_path / "disk", "64k") as disk:
        letters = disk / "dead.jsonl"
        first = logapm_run(tmp_path / "state.db", log, extra=("--dead-letter", str(letters)))
        assert first.returncode == 3, first.stdout + first.stderr
        assert f"cannot write dead letters to {letters}" in first.stdout + first.stderr
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        second = logapm_run(tmp_path / "state.db", log, extra=("--dead-letter", str(letters)))
        assert second.returncode == 0, second.stdout + second.stderr
        assert len(letters.read_bytes().splitlines()) == 3000


def test_read_only_state_directory(tmp_path: Path) -> None:
    """A state directory that cannot be written (a read-only mount as root, mode 0555 otherwise): exit 1
    naming the problem, the store unchanged; a fresh store there is not created."""
    write_log(tmp_path / "a.log", _events(200, 5))
    write_log(tmp_path / "b.log", _events(200, 6))
    if os.geteuid() == 0:
        ctx = tmpfs(tmp_path / "ro", "8m")
    else:
        (tmp_path / "ro").mkdir()
        ctx = contextlib.nullcontext(tmp_path / "ro")
    with ctx as directory:
        state = directory / "state.db"
        assert logapm_run(state, tmp_path / "a.log").returncode == 0
        before = content(state)
        if os.geteuid() == 0:
            subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
        else:
            directory.chmod(0o555)
        try:
            proc = logapm_run(state, tmp_path / "a.log", tmp_path / "b.log")
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert "Traceback" not in proc.stderr
            assert str(directory) in proc.stderr and ("read-only" in proc.stderr.lower() or "not writable" in proc.stderr), \
                proc.stderr
            fresh = logapm_run(directory / "new.db", tmp_path / "a.log")
            assert fresh.returncode == 1 and not (directory / "new.db").exists(), fresh.stderr
            assert content(state) == before
        finally:
            if os.geteuid() == 0:
                subprocess.run(["mount", "-o", "remount,rw", str(directory)], check=True)
            else:
                directory.chmod(0o755)


@pytest.mark.parametrize("damage", ["random-bytes", "truncated", "text", "empty-header", "foreign-sqlite"])
def test_corrupted_or_foreign_state_file(tmp_path: Path, damage: str) -> None:
    """A state file that is garbage, cut short, a text file, a zeroed SQLite header, or another
    application's SQLite database: exit 1 with the file's name and what is wrong, the file untouched."""
    log = tmp_path / "a.log"
    write_log(log, _events(300, 7))
    state = tmp_path / "state.db"
    if damage == "foreign-sqlite":
        with contextlib.closing(sqlite3.connect(state)) as db:
            db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
            db.execute("INSERT INTO users (email) VALUES ('a@example.com')")
            db.commit()
    else:
        assert logapm_run(state, log).returncode == 0
        for extra in tmp_path.glob("state.db-*"):
            extra.unlink()
        data = state.read_bytes()
        state.write_bytes({
            "random-bytes": os.urandom(len(data)),
            "truncated": data[: len(data) // 3],
            "text": b"hello, I am not a database\n" * 100,
            "empty-header": b"\0" * 100 + data[100:],
        }[damage])
    before = digest(state)
    proc = logapm_run(state, log)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert str(state) in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    word = {"foreign-sqlite": "did not create"}.get(damage, "not a usable SQLite database")
    assert word in proc.stderr, proc.stderr
    assert digest(state) == before


def test_missing_input_and_input_replaced_by_a_directory(tmp_path: Path) -> None:
    """An input that does not exist, or that became a directory: exit 1 naming it, nothing committed
    (checkpoints, windows and runs as before); the good input is not half-read either."""
    good = tmp_path / "good.log"
    write_log(good, _events(300, 8))
    state = tmp_path / "state.db"
    assert logapm_run(state, good).returncode == 0
    write_log(good, _events(300, 9))
    before = content(state)
    missing = logapm_run(state, good, tmp_path / "gone.log")
    assert missing.returncode == 1 and "gone.log" in missing.stderr and "no such file" in missing.stderr, \
        missing.stderr
    (tmp_path / "dir.log").mkdir()
    directory = logapm_run(state, good, tmp_path / "dir.log")
    assert directory.returncode == 1 and "dir.log" in directory.stderr and "directory" in directory.stderr, \
        directory.stderr
    for proc in (missing, directory):
        assert "Traceback" not in proc.stderr
    assert content(state) == before
    assert logapm_run(state, good).returncode == 0
    assert_matches(state, _events(300, 8) + _events(300, 9), quantiles=False)


def test_first_run_with_a_missing_input_creates_no_state(tmp_path: Path) -> None:
    """The very first run, with an input that does not exist: exit 1 naming it, and no state store (nor
    its WAL) left behind to look like a run happened."""
    state = tmp_path / "state.db"
    proc = logapm_run(state, tmp_path / "gone.log")
    assert proc.returncode == 1 and "gone.log" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("state.db") and
                  not p.name.endswith(".lock")) == []
