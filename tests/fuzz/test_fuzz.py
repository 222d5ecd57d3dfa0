"""A short, bounded atheris (libFuzzer) session on the line parser, seeded with valid lines of every kind
and their framings: no crash, no broken invariant (see fuzz_parsers.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_atheris_short_run(tmp_path: Path) -> None:
    """20,000 fuzzer executions (about half a minute), starting from a corpus of valid event lines."""
    pytest.importorskip("atheris", reason="atheris is in the dev extra (pip install -e '.[dev]')")
    sys.path.insert(0, str(ROOT / "tests" / "parsers"))
    from _parser_lines import BY_KIND, event_line

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for kind in BY_KIND:
        line = event_line(kind)
        (corpus / kind).write_bytes(line + b"\n")
        (corpus / f"{kind}-cri").write_bytes(b"2026-11-29T10:15:04.512345678Z stdout F " + line + b"\n")
    proc = subprocess.run([sys.executable, str(HERE / "fuzz_parsers.py"), "-runs=20000", "-max_len=4096",
                           "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/", str(corpus)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Done 20000 runs" in proc.stderr, proc.stderr[-2000:]
