"""A plain file's chunks read with the block's end probed first (``sources._whole_lines``) are the chunks
the read gave before it: same bytes, offsets and checkpoints, for any line lengths, parts, chunk and probe
sizes, start offsets and partial tails. The reference is the same reader with the probe turned off
(``_whole_lines`` giving None sends every block through the earlier path, unchanged)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import sources
from aggregator.sources import FileSource, ReadTask


def _chunks(source: FileSource, tasks: list[ReadTask], chunk: int) -> list[tuple[Any, ...]]:
    out = []
    for task in tasks:
        for c in source.read(task, chunk):
            assert c.checkpoint is not None
            out.append((c.source, c.offset, c.data, replace(c.checkpoint, read_at=0)))
    return out


def _both(source: FileSource, tasks: list[ReadTask], chunk: int,
          probe: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sources, "PROBE_BYTES", probe)
        new = _chunks(source, tasks, chunk)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sources, "_whole_lines", lambda f, pos, size: None)
        old = _chunks(source, tasks, chunk)
    return new, old


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 90), min_size=1, max_size=80),
    parts=st.integers(1, 6),
    chunk=st.integers(1, 300),
    probe=st.integers(1, 120),
    tail=st.integers(0, 5),
    already=st.integers(0, 79),
)
def test_probed_reads_give_the_earlier_chunks(tmp_path_factory: pytest.TempPathFactory, lengths: list[int],
                                              parts: int, chunk: int, probe: int, tail: int, already: int) -> None:
    """Lines shorter and longer than the probe and than a chunk, ranges ending inside a block, a partial
    last line: the probed read yields exactly the earlier chunks."""
    d = tmp_path_factory.mktemp("probe")
    log = d / "app.log"
    lines = [f"{i}:".encode() + b"y" * n for i, n in enumerate(lengths)]
    log.write_bytes(b"".join(x + b"\n" for x in lines) + b"z" * tail)
    start = sum(len(x) + 1 for x in lines[:min(already, len(lines))])
    source = FileSource([str(log)])
    (task,) = source.scan({})
    task = replace(task, start=start)
    new, old = _both(source, source.split(task, parts), chunk, probe)
    assert new == old
    assert b"".join(c[2] for c in new).splitlines() == lines[min(already, len(lines)):]


def test_probed_reads_of_the_benchmark_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Event-sized lines (about 400 bytes) in 64 kB chunks with the engine's probe, over parts: the probe
    path is the one taken (fewer fallbacks than chunks) and gives the earlier chunks."""
    log = tmp_path / "app.log"
    lines = [b'{"n": %d, "pad": "%s"}' % (i, b"x" * (300 + i * 37 % 200)) for i in range(3000)]
    log.write_bytes(b"".join(x + b"\n" for x in lines))
    source = FileSource([str(log)])
    (task,) = source.scan({})
    tasks = source.split(task, 3)
    calls: list[bytes | None] = []
    probed = sources._whole_lines

    def counting(f: Any, pos: int, size: int) -> bytes | None:
        got = probed(f, pos, size)
        calls.append(got)
        return got

    monkeypatch.setattr(sources, "_whole_lines", counting)
    new = _chunks(source, tasks, 64 << 10)
    monkeypatch.undo()
    assert sum(c is not None for c in calls) >= len(new) - 3  # at most a part's end falls back
    new2, old = _both(source, tasks, 64 << 10, sources.PROBE_BYTES)
    assert new == new2 == old
