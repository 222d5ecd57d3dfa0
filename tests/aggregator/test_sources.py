"""Checkpointed file sources: every line read exactly once across runs, through rotation by rename,
copytruncate, gzip-compressed rotated files, new files, small growing files and partial last lines; parallel
parts read exactly what a sequential read does; bad inputs fail with a clear InputError."""

from __future__ import annotations

import gzip
import itertools
import os
import pickle
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.sources import Checkpoint, FileSource, InputError, ReadTask


class Runs:
    """Drives the source like successive runs: scan from the checkpoints, read every task (optionally in
    parallel parts, in small chunks), keep each task's last checkpoint."""

    def __init__(self, inputs: Sequence[str | Path], parts: int = 1, chunk: int = 64) -> None:
        self.inputs = [str(p) for p in inputs]
        self.parts = parts
        self.chunk = chunk
        self.checkpoints: dict[str, Checkpoint] = {}
        self.seen: list[bytes] = []

    def run(self) -> list[bytes]:
        source = FileSource(self.inputs)
        lines: list[bytes] = []
        for task in source.scan(self.checkpoints):
            last = None
            for part in source.split(task, self.parts):
                for chunk in source.read(part, self.chunk):
                    assert chunk.data.endswith(b"\n") or task.compressed
                    assert chunk.checkpoint is not None and chunk.checkpoint.identity == task.identity
                    lines.extend(chunk.data.splitlines())
                    last = chunk.checkpoint
            if last is not None:
                self.checkpoints[last.identity] = last
        self.seen.extend(lines)
        return lines


def write(path: Path, *lines: str, mode: str = "ab") -> list[bytes]:
    data = [f"{line}".encode() for line in lines]
    with open(path, mode) as f:
        f.write(b"".join(x + b"\n" for x in data))
    return data


def numbered(prefix: str, n: int, width: int = 60) -> list[str]:
    return [f"{prefix}-{i:05d}-".ljust(width, "x") for i in range(n)]


def begin(tmp_path: Path, lines: int, inputs: Sequence[str | Path] | None = None, **kw: int
          ) -> tuple[Path, Runs, list[bytes]]:
    """app.log with ``lines`` lines, read once by a first run (of ``inputs``, default the file)."""
    log = tmp_path / "app.log"
    expected = write(log, *numbered("a", lines))
    runs = Runs(inputs or [log], **kw)
    runs.run()
    return log, runs, expected


def lines_task(d: Path, lengths: list[int], tail: int, already: int) -> tuple[FileSource, ReadTask, list[bytes]]:
    """A log of numbered lines of these lengths and a partial last line of ``tail`` bytes: its source, its
    task from after the first ``already`` lines (as a checkpoint there would give), and the lines from there."""
    log = d / "app.log"
    lines = [f"{i}:".encode() + b"y" * n for i, n in enumerate(lengths)]
    log.write_bytes(b"".join(x + b"\n" for x in lines) + b"z" * tail)
    skip = min(already, len(lines))
    source = FileSource([str(log)])
    (task,) = source.scan({})
    return source, replace(task, start=sum(len(x) + 1 for x in lines[:skip])), lines[skip:]


def assert_once(seen: list[bytes], expected: list[bytes]) -> None:
    dup = [k for k, v in Counter(seen).items() if v > 1]
    assert not dup, f"read twice: {dup[:3]}"
    assert sorted(seen) == sorted(expected)


def test_new_file_then_appends_then_nothing(tmp_path: Path) -> None:
    """A new file is read from 0; appended lines are read next run; an idle run reads nothing."""
    log = tmp_path / "app.log"
    expected = write(log, *numbered("a", 50))
    runs = Runs([log])
    assert runs.run() == expected
    expected += write(log, *numbered("b", 10))
    assert runs.run() == expected[50:]
    assert runs.run() == []
    assert len(runs.checkpoints) == 1


def test_partial_last_line_waits_for_the_next_run(tmp_path: Path) -> None:
    """A last line without its newline is not read (nor checkpointed past) until it is complete."""
    log = tmp_path / "app.log"
    write(log, "one", "two")
    with open(log, "ab") as f:
        f.write(b"thr")
    runs = Runs([log], chunk=2)
    assert runs.run() == [b"one", b"two"]
    assert next(iter(runs.checkpoints.values())).offset == 8
    assert runs.run() == []
    with open(log, "ab") as f:
        f.write(b"ee\nfour\n")
    assert runs.run() == [b"three", b"four"]


@pytest.mark.parametrize("named", ["file", "dir", "glob", "glob of current names"])
def test_rotation_by_rename(tmp_path: Path, named: str) -> None:
    """app.log renamed to app.log.1 with unread lines, a new app.log started: the rest of the old file and
    the whole new one are read, each line once, however the input was named."""
    log = tmp_path / "app.log"
    expected = write(log, *numbered("a", 30))
    inputs = {"file": [log], "dir": [tmp_path], "glob": [tmp_path / "*.log*"],
              "glob of current names": [tmp_path / "*.log"]}[named]
    runs = Runs(inputs)
    runs.run()
    expected += write(log, *numbered("b", 5))  # written after the run, before rotation
    os.rename(log, tmp_path / "app.log.1")
    expected += write(log, *numbered("c", 7))
    runs.run()
    expected += write(log, *numbered("d", 3))
    runs.run()
    assert_once(runs.seen, expected)


def test_two_rotations_between_runs(tmp_path: Path) -> None:
    """Rotated twice between runs (app.log -> .1 -> .2): the oldest unread tail is still found."""
    log, runs, expected = begin(tmp_path, 20)
    expected += write(log, *numbered("b", 4))
    os.rename(log, tmp_path / "app.log.1")
    expected += write(log, *numbered("c", 4))
    os.rename(tmp_path / "app.log.1", tmp_path / "app.log.2")
    os.rename(log, tmp_path / "app.log.1")
    expected += write(log, *numbered("d", 4))
    runs.run()
    assert_once(runs.seen, expected)


def test_named_file_does_not_pull_in_old_rotated_history(tmp_path: Path) -> None:
    """Naming app.log reads app.log; the rotated files that were there before the first run are not read
    (name the directory or a glob to read them)."""
    write(tmp_path / "app.log.1", *numbered("old", 5))
    with gzip.open(tmp_path / "app.log.2.gz", "wb") as f:
        f.write(b"older\n")
    expected = write(tmp_path / "app.log", *numbered("a", 5))
    runs = Runs([tmp_path / "app.log"])
    assert runs.run() == expected
    assert runs.run() == []


def test_copytruncate(tmp_path: Path) -> None:
    """copytruncate: the copy carries the old first bytes and is finished from the checkpoint; the
    truncated original starts with new bytes and is read from 0."""
    log, runs, expected = begin(tmp_path, 40, [tmp_path])
    expected += write(log, *numbered("b", 6))
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    expected += write(log, *numbered("c", 3))
    runs.run()
    assert_once(runs.seen, expected)


def test_copy_present_before_truncation_is_not_read_twice(tmp_path: Path) -> None:
    """A run between copytruncate's copy and its truncation sees two files with the same first bytes:
    it reads one of them (the original), and after the truncation the copy continues from there."""
    log, runs, expected = begin(tmp_path, 40, [tmp_path])
    expected += write(log, *numbered("b", 6))
    shutil.copyfile(log, tmp_path / "app.log.1")
    runs.run()  # copy made, not yet truncated
    os.truncate(log, 0)
    expected += write(log, *numbered("c", 3))
    runs.run()
    assert_once(runs.seen, expected)


def test_truncated_and_rewritten_in_place(tmp_path: Path) -> None:
    """The file at the checkpoint's path became shorter (truncated, then written again): read from 0."""
    log = tmp_path / "app.log"
    first = write(log, *numbered("a", 40))
    runs = Runs([log])
    runs.run()
    again = write(log, *numbered("z", 3), mode="wb")
    assert runs.run() == again
    assert_once(runs.seen, first + again)


def test_gzip_compressed_rotated_file(tmp_path: Path) -> None:
    """app.log -> app.log.1 -> app.log.1.gz with unread lines: the compressed file is finished from the
    checkpoint (offsets in the decompressed stream) and not decompressed again on later runs."""
    log, runs, expected = begin(tmp_path, 300, [tmp_path])
    expected += write(log, *numbered("b", 20))
    os.rename(log, tmp_path / "app.log.1")
    with open(tmp_path / "app.log.1", "rb") as src, gzip.open(tmp_path / "app.log.1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.unlink(tmp_path / "app.log.1")
    expected += write(log, *numbered("c", 5))
    runs.run()
    assert_once(runs.seen, expected)
    tasks = FileSource([str(tmp_path)]).scan(runs.checkpoints)
    assert [t.path for t in tasks] == []


def test_gzip_beside_its_uncompressed_twin_is_read_once(tmp_path: Path) -> None:
    """While logrotate compresses, app.log.1 and app.log.1.gz hold the same lines: one is read."""
    rotated = tmp_path / "app.log.1"
    expected = write(rotated, *numbered("a", 100))
    with open(rotated, "rb") as src, gzip.open(tmp_path / "app.log.1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    runs = Runs([tmp_path])
    runs.run()
    os.unlink(rotated)
    runs.run()
    assert_once(runs.seen, expected)


def test_new_gzip_file_and_its_last_line_without_newline(tmp_path: Path) -> None:
    """A compressed file never seen before is read whole, its last line counted even without a newline
    (a compressed file cannot grow)."""
    with gzip.open(tmp_path / "old.log.3.gz", "wb") as f:
        f.write(b"one\ntwo\nthree")
    runs = Runs([tmp_path])
    assert runs.run() == [b"one", b"two", b"three"]
    assert runs.run() == []


def test_damaged_gzip_is_skipped_with_a_warning(tmp_path: Path) -> None:
    """A .gz that is not (yet) a complete gzip file is skipped and said so, not a crash."""
    (tmp_path / "app.log.2.gz").write_bytes(b"\x1f\x8b\x08garbage")
    source = FileSource([str(tmp_path)])
    assert source.scan({}) == []
    assert "app.log.2.gz" in source.last_scan.warnings[0]


def test_small_file_growing_keeps_its_identity(tmp_path: Path) -> None:
    """A file first seen shorter than 1 KiB is keyed by what existed; as it grows past 1 KiB the same
    identity carries on (the fingerprint lengthens), and it can still be followed through a rename."""
    log = tmp_path / "app.log"
    expected = write(log, "tiny")
    runs = Runs([tmp_path])
    runs.run()
    (identity,) = runs.checkpoints
    assert runs.checkpoints[identity].fingerprint_len == 5
    expected += write(log, *numbered("a", 40))
    runs.run()
    assert list(runs.checkpoints) == [identity]
    assert runs.checkpoints[identity].fingerprint_len == 1024
    expected += write(log, *numbered("b", 2))
    os.rename(log, tmp_path / "app.log.1")
    runs.run()
    assert list(runs.checkpoints) == [identity]
    assert_once(runs.seen, expected)


def test_empty_file_is_ignored_until_written(tmp_path: Path) -> None:
    """An empty file has nothing to read and no identity yet; it is read once it has lines."""
    log = tmp_path / "app.log"
    log.touch()
    runs = Runs([log])
    assert runs.run() == [] and runs.checkpoints == {}
    assert runs.run() == []
    expected = write(log, "x")
    assert runs.run() == expected


def test_directory_rule(tmp_path: Path) -> None:
    """A directory means its *.log, *.log.N, *.log.N.gz, *.log-DATE, *.json, *.jsonl files, not others,
    and not subdirectories."""
    names = ["a.log", "a.log.1", "a.log.2.gz", "a.log-20261129", "0.log.20261129-101500.gz", "b.json",
             "c.jsonl", "c.jsonl.1", "notes.txt", "a.log.bak", "README"]
    for name in names:
        if name.endswith(".gz"):
            with gzip.open(tmp_path / name, "wb") as f:
                f.write(name.encode() + b"\n")
        else:
            (tmp_path / name).write_text(name + "\n")
    (tmp_path / "sub.log").mkdir()
    (tmp_path / "sub.log" / "x.log").write_text("nested\n")
    got = sorted(Runs([tmp_path]).run())
    assert got == sorted(n.encode() for n in names[:8])


def test_same_file_named_twice_is_read_once(tmp_path: Path) -> None:
    """A file named by path, glob and directory at once is one file."""
    log = tmp_path / "app.log"
    expected = write(log, *numbered("a", 5))
    runs = Runs([log, tmp_path / "*.log", tmp_path, tmp_path / "." / "app.log"])
    assert runs.run() == expected


def test_file_rotated_between_scan_and_read_is_left_for_the_next_run(tmp_path: Path) -> None:
    """If the path points to another file when the task is read, nothing is read from it; the next
    scan finds the moved file by its first bytes."""
    log = tmp_path / "app.log"
    expected = write(log, *numbered("a", 5))
    source = FileSource([str(tmp_path)])
    (task,) = source.scan({})
    os.rename(log, tmp_path / "app.log.1")
    write(log, "other")
    assert list(source.read(task)) == []
    runs = Runs([tmp_path])
    runs.run()
    assert_once(runs.seen, [*expected, b"other"])


def test_file_truncated_between_scan_and_read_is_not_read_from_the_old_offset(tmp_path: Path) -> None:
    """copytruncate between the scan and the read: the same inode now starts with other bytes, so the
    task reads nothing; the next scan reads the copy from the checkpoint and the new content from 0."""
    log, runs, expected = begin(tmp_path, 40, [tmp_path])
    expected += write(log, *numbered("b", 5))
    source = FileSource([str(tmp_path)])
    (task,) = source.scan(runs.checkpoints)
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    expected += write(log, *numbered("c", 60))
    assert list(source.read(task)) == []
    runs.run()
    assert_once(runs.seen, expected)


# --- parallel parts ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=60),
    parts=st.integers(1, 9),
    chunk=st.integers(1, 50),
    tail=st.integers(0, 5),
    already=st.integers(0, 59),
)
def test_split_parts_read_exactly_the_sequential_lines(
    tmp_path_factory: pytest.TempPathFactory, lengths: list[int], parts: int, chunk: int, tail: int, already: int
) -> None:
    """For any line lengths, part counts, chunk sizes, start checkpoints and partial tails: the union of the
    parts' lines is the sequential read, no line twice, none lost, in order; the last checkpoint is the
    same."""
    source, task, rest = lines_task(tmp_path_factory.mktemp("split"), lengths, tail, already)
    sequential = [c for c in source.read(task, 1 << 20)]
    got: list[bytes] = []
    last = None
    pieces = source.split(task, parts)
    assert pieces[0].start == task.start and pieces[-1].end == task.end
    assert all(a.end == b.start for a, b in itertools.pairwise(pieces))
    for part in pieces:
        for c in source.read(part, chunk):
            got.extend(c.data.splitlines())
            last = c.checkpoint
    assert got == b"".join(c.data for c in sequential).splitlines() == rest
    if sequential:
        assert last is not None and sequential[-1].checkpoint is not None
        assert replace(last, read_at=0) == replace(sequential[-1].checkpoint, read_at=0)


def test_compressed_tasks_are_not_split(tmp_path: Path) -> None:
    """Offsets in a gzip stream cannot be sought: a compressed task stays whole."""
    with gzip.open(tmp_path / "a.log.1.gz", "wb") as f:
        f.write(b"x\n" * 1000)
    source = FileSource([str(tmp_path)])
    (task,) = source.scan({})
    assert source.split(task, 4) == [task]


def test_parallel_runs_through_rotation(tmp_path: Path) -> None:
    """The rotation scenario again, read in 3 parts with tiny chunks."""
    log, runs, expected = begin(tmp_path, 200, [tmp_path], parts=3, chunk=17)
    expected += write(log, *numbered("b", 50))
    os.rename(log, tmp_path / "app.log.1")
    expected += write(log, *numbered("c", 50))
    runs.run()
    assert_once(runs.seen, expected)


# --- the data types --------------------------------------------------------------------------------------


def test_checkpoint_json_round_trip_and_task_pickles(tmp_path: Path) -> None:
    """Checkpoints survive the store as JSON; tasks survive pickling to a worker process."""
    log = tmp_path / "app.log"
    write(log, "a", "b")
    source = FileSource([str(log)])
    (task,) = source.scan({})
    cp = source.checkpoint_after(task, 4)
    assert Checkpoint.from_json(cp.to_json()) == cp
    assert cp.offset == 4 and cp.identity == task.identity and cp.dev == os.stat(log).st_dev
    assert pickle.loads(pickle.dumps(task)) == task
    assert Checkpoint.from_json('{"identity":"i","path":"p","dev":1,"ino":2,"fingerprint":"f","offset":3}').compressed is False


def test_identity_is_not_the_path(tmp_path: Path) -> None:
    """The identity comes from the first bytes: the same content under another name has the same one."""
    write(tmp_path / "a.log", "same first line")
    (t1,) = FileSource([str(tmp_path / "a.log")]).scan({})
    os.rename(tmp_path / "a.log", tmp_path / "b.log")
    (t2,) = FileSource([str(tmp_path / "b.log")]).scan({})
    assert t1.identity == t2.identity and "a.log" not in t1.identity


# --- bad inputs -------------------------------------------------------------------------------------------


def test_missing_input(tmp_path: Path) -> None:
    """A named file that does not exist: InputError naming it."""
    with pytest.raises(InputError, match=r"nope\.log: no such file"):
        FileSource([str(tmp_path / "nope.log")])


def test_named_file_missing_mid_rotation_is_not_an_error(tmp_path: Path) -> None:
    """Between a rotation's rename and the new file's creation the named file is missing, but its rotated
    sibling is there: the run goes on (and finishes the rotated file)."""
    log, runs, expected = begin(tmp_path, 10)
    expected += write(log, *numbered("b", 3))
    os.rename(log, tmp_path / "app.log.1")
    runs.run()
    assert_once(runs.seen, expected)


def test_directory_named_as_a_log_file(tmp_path: Path) -> None:
    """A directory where a log file was named (app.log is a directory): InputError saying so."""
    (tmp_path / "app.log").mkdir()
    with pytest.raises(InputError, match=r"app\.log: is a directory, not a log file"):
        FileSource([str(tmp_path / "app.log")])
    FileSource([str(tmp_path / "app.log") + "/"])  # explicitly a directory: fine


def test_glob_in_a_missing_directory(tmp_path: Path) -> None:
    """A pattern whose directory does not exist is a mistake, not an empty input."""
    with pytest.raises(InputError, match="no such directory"):
        FileSource([str(tmp_path / "missing" / "*.log")])
    assert FileSource([str(tmp_path / "*.log")]).scan({}) == []  # exists, no files yet: fine


def test_not_a_regular_file(tmp_path: Path) -> None:
    """A FIFO (or device) cannot be read from a checkpoint: InputError."""
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        FileSource([str(fifo)])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    """A file without read permission: InputError naming it."""
    log = tmp_path / "app.log"
    write(log, "x")
    log.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        FileSource([str(log)])


def test_fingerprints_are_the_sha1_checkpoints_hold(tmp_path: Path) -> None:
    """A file's fingerprint is the hex SHA-1 of its first bytes, as hashlib gives it (what the checkpoints of
    every store written so far hold), whether the file is shorter than FINGERPRINT_BYTES or not."""
    import hashlib

    for name, data in (("short.log", b'{"a":1}\n'), ("long.log", b"".join(b"line %05d\n" % i for i in range(500)))):
        path = tmp_path / name
        path.write_bytes(data)
        (task,) = FileSource([str(path)]).scan({})
        head = data[:task.fingerprint_len]
        assert task.fingerprint_len == min(len(data), 1024)
        assert task.fingerprint == hashlib.sha1(head).hexdigest()


def test_what_a_run_imports_leaves_out() -> None:
    """What ``logapm run`` imports (before its workers fork and for its stages) leaves hashlib out: importing
    it loads OpenSSL's libcrypto, ~2.3 ms of each run's start (sources and the trace records use CPython's
    own SHA-1 and BLAKE2); and the app's logging_apm.conf, unless a boolean setting comes as text."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import aggregator.commands.run, aggregator.run, aggregator.sources, aggregator.summary\n"
            "import aggregator.insights.traces, aggregator.insights.records\n"
            "import aggregator.progress, aggregator.dask_engine, alerting.stage, aggregator.delivery\n"
            "from aggregator.config import load_config\n"
            "load_config(None, environ={'LOGAPM_WORKERS': '2'}, overrides={'run.trace_insights': None})\n"
            "print(sorted(m for m in ('hashlib', '_hashlib', 'logging_apm.conf') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
