"""A short, bounded atheris (libFuzzer) session of the native scanner against the reference parser, seeded
with valid lines of every kind (see fuzz_scan.py): no crash, no exception from the C function, and every
block the scanner takes read exactly as ``LineParser.parse`` + ``columns.from_events`` read it.

The same harness fuzzes a sanitizer build for longer: compile ``parsers/_scan.c`` with
``-fsanitize=address,undefined`` into a copy of the ``parsers`` package, put that copy first on PYTHONPATH
and run ``fuzz_scan.py`` with ``LD_PRELOAD=$(gcc -print-file-name=libasan.so) PYTHONMALLOC=malloc``
(pymalloc would hide overflows of small PyMem blocks from ASan)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNS = 20_000


def unavailable(reason: str) -> None:
    """Skip locally, fail under CI (tests/conftest.py's rule; not imported: under a whole-suite run the name
    ``conftest`` is whichever test directory's conftest was imported first)."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI=true: this must run, not skip)")
    pytest.skip(reason)


def test_atheris_scan_differential_short_run(tmp_path: Path) -> None:
    """20,000 fuzzer executions (about 20 s), starting from valid lines of every kind; more than 1% of the
    blocks must be taken by the scanner (else little was compared)."""
    pytest.importorskip("atheris", reason="atheris is in the dev extra (pip install -e '.[dev]')")
    if importlib.util.find_spec("parsers._scan") is None:
        unavailable("the native scanner (parsers._scan) is not built: pip install -e . compiles it")
    corpus = tmp_path / "corpus"
    corpus.mkdir()  # empty: the harness writes its seeds into it
    proc = subprocess.run([sys.executable, str(HERE / "fuzz_scan.py"), f"-runs={RUNS}", "-max_len=8192",
                           "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/", str(corpus)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"Done {RUNS} runs" in proc.stderr, proc.stderr[-2000:]
    progress = re.findall(r"scan-fuzz: (\d+) runs, (\d+) accepted, (\d+) events", proc.stderr)
    assert progress, proc.stderr[-2000:]
    runs, accepted, events = map(int, progress[-1])
    # the seeds alone are a few dozen: most of these are mutated blocks the scanner took and the reference
    # agreed on (typically 10-30% of the runs)
    assert runs >= RUNS - 2000 and accepted > runs // 100 and events > 0, progress[-1]
