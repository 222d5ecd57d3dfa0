"""``FileSource.read_mapped`` (a plain file's chunks as views of its mapped pages, ``aggregator._filemap``) gives
``read``'s chunks: the same bytes, offsets and checkpoints, for any line lengths, parts, chunk and probe sizes,
start offsets and partial tails; ``process_part`` makes the same results of them. A file that shrinks while
mapped never crashes a run: the pages gone read as zeros (the module's SIGBUS handler), the part is read again
with ``read``, and its result is what the read path makes of the file as it is now, in-process and in forked
workers. The SIGBUS cases run in a child process, so that a handler that failed would fail the test, not
kill the suite."""

from __future__ import annotations

import gzip
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from aggregator import sources
from aggregator.engine import EngineSettings, LocalEngine, process_part
from aggregator.loggen import generate_events, write_log
from aggregator.sources import FileSource, MappingFaulted, ReadTask
from tests.aggregator.test_sources import lines_task
from tests.aggregator.test_sources_read import READ_CASES

if sources._filemap is None:
    pytest.skip("aggregator._filemap is not built (tests/test_native_extensions.py fails CI for it)",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
filemap: Any = sources._filemap


def _chunks(chunks: Any) -> list[tuple[Any, ...]]:
    out = []
    for c in chunks:
        assert c.checkpoint is not None
        out.append((c.source, c.offset, bytes(c.data), replace(c.checkpoint, read_at=0)))
    return out


def _both(source: FileSource, tasks: list[ReadTask], chunk: int) -> tuple[list[Any], list[Any]]:
    mapped = [c for t in tasks for c in _chunks(source.read_mapped(t, chunk))]
    read = [c for t in tasks for c in _chunks(source.read(t, chunk))]
    return mapped, read


class PlainSource(FileSource):
    """The read() path only (``process_part`` takes the mapped one when a source has it)."""

    read_mapped = None  # type: ignore[assignment]


def _same_part(a: Any, b: Any) -> bool:
    b.checkpoint = b.checkpoint and replace(b.checkpoint, read_at=0)
    a.checkpoint = a.checkpoint and replace(a.checkpoint, read_at=0)
    return pickle.dumps(a) == pickle.dumps(b)


@settings(max_examples=150, deadline=None)
@given(**READ_CASES)
def test_mapped_reads_give_reads_chunks(tmp_path_factory: pytest.TempPathFactory, lengths: list[int], parts: int,
                                        chunk: int, probe: int, tail: int, already: int) -> None:
    """Lines shorter and longer than the probe and than a chunk (those go through read's own path), ranges
    ending inside a block, a partial last line: the mapped chunks are read's."""
    source, task, rest = lines_task(tmp_path_factory.mktemp("mapped"), lengths, tail, already)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sources, "PROBE_BYTES", probe)
        mapped, read = _both(source, source.split(task, parts), chunk)
    assert mapped == read
    assert b"".join(c[2] for c in mapped).splitlines() == rest


def test_mapped_chunks_are_views_and_none_outlives_its_chunk(tmp_path: Path) -> None:
    """Each chunk is a memoryview of a mapping, at most two mappings are alive as a consumer takes them one
    after another (its chunk and the next), none once it is done; read() on the same task gives bytes."""
    source, task, _ = lines_task(tmp_path, [60 + i % 50 for i in range(2000)], 3, 0)
    before = filemap.live()
    alive = []
    for c in source.read_mapped(task, 4096):
        assert type(c.data) is memoryview and c.data.readonly
        alive.append(filemap.live() - before)
    del c
    assert len(alive) > 20 and max(alive) <= 2
    assert filemap.live() == before
    assert all(type(c.data) is bytes for c in source.read(task, 4096))


def test_compressed_and_unmappable_files_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .gz file, a build without the extension and a file that cannot be mapped: read()'s chunks."""
    gz = tmp_path / "a.log.1.gz"
    with gzip.open(gz, "wb") as f:
        f.write(b"".join(b'{"n": %d}\n' % i for i in range(3000)) + b'{"last": 1}')
    source = FileSource([str(gz)])
    (task,) = source.scan({})
    assert _both(source, [task], 1000)[0] == _both(source, [task], 1000)[1]
    plain, task2, _ = lines_task(tmp_path, [30] * 500, 2, 7)
    read = _chunks(plain.read(task2, 1000))
    monkeypatch.setattr(sources, "_filemap", None)
    assert _chunks(plain.read_mapped(task2, 1000)) == read

    class Unmappable:
        @staticmethod
        def map(fd: int, offset: int, length: int) -> Any:
            raise OSError(19, "No such device")

    monkeypatch.setattr(sources, "_filemap", Unmappable)
    assert _chunks(plain.read_mapped(task2, 1000)) == read


def test_mapping_reads_the_files_bytes(tmp_path: Path) -> None:
    """At any offset (not a page's start), newlines found and not found, bounds clipped."""
    path = tmp_path / "f"
    data = bytes(range(256)) * 100 + b"\n" + b"y" * 10000 + b"\nz"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, length in [(0, len(data)), (5, 300), (4095, 2), (4096, 9000), (len(data) - 1, 1)]:
            m = filemap.map(fd, offset, length)
            want = data[offset: offset + length]
            assert bytes(m) == want and len(m) == length and not m.faulted
            assert m.find_newline(0) == want.find(b"\n") and m.rfind_newline(0) == want.rfind(b"\n")
            assert m.find_newline(1, 10**9) == want.find(b"\n", 1)
            assert m.rfind_newline(-5, length - 1) == want.rfind(b"\n", 0, length - 1)
        with pytest.raises(ValueError):
            filemap.map(fd, 0, 0)
        with pytest.raises(OSError):
            filemap.map(-1, 0, 10)
    finally:
        os.close(fd)


def _generated(tmp_path: Path, events: int = 20_000) -> tuple[Path, float]:
    log = tmp_path / "app.log"
    now = time.time()
    write_log(log, generate_events(events, start=now - 3600.0, seed=3), ordinary_every=53)
    return log, now


def test_parts_read_mapped_are_parts_read(tmp_path: Path) -> None:
    """``process_part`` over the parts of a generated log: the same result, pickled, either way."""
    log, now = _generated(tmp_path)
    s = EngineSettings(now=now, workers=2, part_bytes=1 << 20, chunk_bytes=128 << 10, max_series=2000)
    source, plain = FileSource([str(log)]), PlainSource([str(log)])
    jobs = LocalEngine(source, s).plan(source.scan({}))
    assert len(jobs) > 2
    for ti, pi, task in jobs:
        assert _same_part(process_part(source, task, s, ti, pi), process_part(plain, task, s, ti, pi))


# --- a file shrinking under its mappings -----------------------------------------------------------------

_CUTTING = '''
import os, pickle, sys, time
from dataclasses import replace
from aggregator import sources
from aggregator.engine import EngineSettings, LocalEngine, process_part
from aggregator.sources import FileSource
from parsers.lines import LineParser

log, marks, cut_at, where = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
real = sources._filemap
parse_columns = LineParser.parse_columns


def cutting(self, data, source="", base_offset=0):
    """The file cut at ``cut_at`` just before the scanner reads the first chunk reaching past it: the chunk's
    pages past the cut are gone while it is scanned."""
    if base_offset + len(data) > cut_at and os.path.getsize(log) > cut_at:
        os.truncate(log, cut_at)
    return parse_columns(self, data, source, base_offset)


class Recording:
    made = []

    @staticmethod
    def map(fd, offset, length):
        m = real.map(fd, offset, length)
        if offset <= cut_at < offset + length:
            Recording.made.append(m)
        return m


read = FileSource.read


def read_again(self, task, chunk_bytes=8 << 20):
    with open(marks, "a") as f:
        f.write(f"{os.getpid()} {task.start}\\n")
    return read(self, task, chunk_bytes)


class Plain(FileSource):
    read_mapped = None


now = float(sys.argv[5])
s = EngineSettings(now=now, workers=2, part_bytes=1 << 20, chunk_bytes=128 << 10, max_series=2000)
source = FileSource([log])
tasks = source.scan({})
jobs = LocalEngine(source, s).plan(tasks)
with open(log, "rb") as f:
    whole = f.read()
sources._filemap = Recording
LineParser.parse_columns = cutting
FileSource.read = read_again
if where == "in-process":
    ti, pi, task = jobs[-1]
    got = [process_part(source, task, s, ti, pi)]
    faulted = [m.faulted for m in Recording.made]
else:
    got = list(LocalEngine(source, s).run(tasks))
    faulted = None
sources._filemap = real
LineParser.parse_columns = parse_columns
FileSource.read = read
# what the read path makes of the file as it is now, part by part, over the same parts (planned again now, the
# cuts of the shorter file's parts could move: window_cuts reads the lines around each cut)
LocalEngine._plan = lambda self, tasks: (len(jobs), iter(jobs))
want = list(LocalEngine(Plain([log]), s).run(tasks)) if where != "in-process" else [
    process_part(Plain([log]), jobs[-1][2], s, jobs[-1][0], jobs[-1][1])]
for r in got + want:
    if r.checkpoint is not None:
        r.checkpoint = replace(r.checkpoint, read_at=0)
sys.stdout.buffer.write(pickle.dumps({
    "same": [pickle.dumps(a) == pickle.dumps(b) for a, b in zip(got, want, strict=True)],
    "events": [r.events for r in got], "faulted": faulted, "size": os.path.getsize(log),
    "parts": [(t.start, t.end) for _, _, t in jobs], "whole": len(whole),
}))
'''


@pytest.mark.parametrize("where", ["in-process", "workers"])
def test_a_file_cut_while_its_pages_are_scanned(tmp_path: Path, where: str) -> None:
    """copytruncate-like: the file is cut inside its last part just before the scanner reads the chunk
    holding the cut, so that it reads pages that are gone. No crash; the part is read again with read(), and
    every part's result is the read path's over the file as it is now (the earlier parts whole, the last one
    up to the cut's last line); in forked workers too (the handler is installed there, where they map)."""
    log, now = _generated(tmp_path)
    size = log.stat().st_size
    marks = tmp_path / "marks"
    marks.touch()
    source = FileSource([str(log)])
    s = EngineSettings(now=now, workers=2, part_bytes=1 << 20, chunk_bytes=128 << 10, max_series=2000)
    last = LocalEngine(source, s).plan(source.scan({}))[-1][2]  # (its start moved to a window's: window_cuts)
    cut_at = last.start + 50_000  # many pages before the end of the part's first 128 kB chunk
    proc = subprocess.run([sys.executable, "-c", _CUTTING, str(log), str(marks), str(cut_at), where, repr(now)],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    out = pickle.loads(proc.stdout)
    assert out["whole"] == size and out["size"] == cut_at
    assert out["parts"][-1] == (last.start, last.end)
    assert all(out["same"]) and len(out["same"]) == (1 if where == "in-process" else len(out["parts"]))
    assert out["events"][-1] > 0  # the last part read up to the cut, not nothing
    if where == "in-process":
        assert out["faulted"] == [True]
    redone = [int(line.split()[1]) for line in marks.read_text().splitlines()]
    assert redone == [last.start]  # the cut part alone was read again


def test_a_file_cut_inside_a_chunks_last_page_is_seen(tmp_path: Path) -> None:
    """A cut inside the chunk's last page faults nothing (the rest of that page reads zeros): the file's
    size after the chunk says it, and the next step raises MappingFaulted."""
    source, task, _ = lines_task(tmp_path, [50] * 400, 0, 0)
    chunks = source.read_mapped(task, 8192)
    first = next(chunks)
    os.truncate(task.path, first.offset + len(first.data) - 3)
    assert bytes(first.data)[-3:] == b"\0\0\0"
    with pytest.raises(MappingFaulted):
        next(chunks)


_FOREIGN = '''
import mmap, os, signal, sys
from aggregator import _filemap
path = sys.argv[1]
with open(path, "wb") as f:
    f.write(b"x\\n" * 50000)
fd = os.open(path, os.O_RDONLY)
ours = _filemap.map(fd, 0, 100000)  # the handler is installed
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGBUS)
else:
    other = mmap.mmap(fd, 100000, prot=mmap.PROT_READ)
    os.truncate(path, 10)
    print(other[90000])
print("survived")
'''


@pytest.mark.parametrize("how", ["kill", "fault"])
def test_a_sigbus_elsewhere_still_ends_the_process(tmp_path: Path, how: str) -> None:
    """The handler repairs its own mappings only: a fault in another mapping, or a SIGBUS sent by kill(),
    takes the default action as before (the process ends by SIGBUS)."""
    proc = subprocess.run([sys.executable, "-c", _FOREIGN, str(tmp_path / "f"), how], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGBUS and b"survived" not in proc.stdout
