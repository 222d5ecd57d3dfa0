"""A plain file's chunks read with the block's end probed first (``sources._whole_lines``) are the chunks
the read gave before it: same bytes, offsets and checkpoints, for any line lengths, parts, chunk and probe
sizes, start offsets and partial tails. The reference is the same reader with the probe turned off
(``_whole_lines`` giving None sends every block through the earlier path, unchanged)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import sources
from aggregator.sources import FileSource, ReadTask
from tests.aggregator.test_sources import lines_task


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


# line lengths, parts, chunk and probe sizes, partial tails, start lines (test_sources_mapped.py too)
READ_CASES = dict(
    lengths=st.lists(st.integers(0, 90), min_size=1, max_size=80),
    parts=st.integers(1, 6),
    chunk=st.integers(1, 300),
    probe=st.integers(1, 120),
    tail=st.integers(0, 5),
    already=st.integers(0, 79),
)


@settings(max_examples=150, deadline=None)
@given(**READ_CASES)
def test_probed_reads_give_the_earlier_chunks(tmp_path_factory: pytest.TempPathFactory, lengths: list[int],
                                              parts: int, chunk: int, probe: int, tail: int, already: int) -> None:
    """Lines shorter and longer than the probe and than a chunk, ranges ending inside a block, a partial
    last line: the probed read yields exactly the earlier chunks."""
    source, task, rest = lines_task(tmp_path_factory.mktemp("probe"), lengths, tail, already)
    new, old = _both(source, source.split(task, parts), chunk, probe)
    assert new == old
    assert b"".join(c[2] for c in new).splitlines() == rest


def test_range_ending_at_a_probed_blocks_last_newline(tmp_path: Path) -> None:
    """A range that ends exactly where a probed block's whole lines end stops there: the next range's first
    line is not read by this one too (the random cases above seldom put a part's end on a block's last
    newline; reading on past it passed them)."""
    source, task, rest = lines_task(tmp_path, [7] * 8, 0, 0)  # eight 10-byte lines
    tasks = source.split(task, 2)
    assert [(t.start, t.end) for t in tasks] == [(0, 40), (40, 80)]
    new, old = _both(source, tasks, 20, 8)  # the first part's second block ends at byte 40
    assert new == old
    assert b"".join(c[2] for c in new).splitlines() == rest


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


class _ChangedAfterProbe(io.BytesIO):
    """A file that ``change`` alters right after its first read (the probe of the block's end), as a log
    truncated (copytruncate) or rewritten in place between the probe and the block's read would be."""

    def __init__(self, data: bytes, change: Callable[[io.BytesIO], None]) -> None:
        super().__init__(data)
        self._change: Callable[[io.BytesIO], None] | None = change

    def read(self, size: int | None = -1, /) -> bytes:
        out = super().read(size)
        change, self._change = self._change, None
        if change is not None:
            at = self.tell()
            change(self)
            self.seek(at)
        return out


def _rewrite(f: io.BytesIO) -> None:
    size = len(f.getvalue())
    f.seek(0)
    f.write(b"x" * size)  # same size, no newline left


@pytest.mark.parametrize("change", [lambda f: f.truncate(150), _rewrite], ids=["truncated", "rewritten"])
def test_block_changed_after_its_probe_goes_to_the_general_path(change: Callable[[io.BytesIO], None]) -> None:
    """The probe found the block's last newline, then the file changed before the block was read: no chunk
    is made of what was read (its end is not that newline), and the file is back at the block's start for
    the general path, which reads what is there now."""
    data = b"".join(b"%03d:" % i + b"y" * 40 + b"\n" for i in range(20))
    f = _ChangedAfterProbe(data, change)
    assert sources._whole_lines(f, 100, 600) is None
    assert f.tell() == 100
    assert sources._whole_lines(_ChangedAfterProbe(data, lambda f: None), 100, 600) == data[100: data.rfind(b"\n", 0, 700) + 1]
