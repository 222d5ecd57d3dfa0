"""Checkpointed file sources: what to read this run, from where, in whole lines.

A file is known by its *identity*, derived from a fingerprint of its first bytes (SHA-1 of the first
``min(size, 1 KiB)`` bytes of its content, decompressed for ``.gz``), never by its path; a ``Checkpoint``
is that identity plus the byte offset read up to (and the path, device and inode last seen). So:

- **rotation by rename** (``app.log`` -> ``app.log.1``, a new ``app.log``): the renamed file still has
  its first bytes, is found under its new name, and is finished from its checkpoint; the new file is new;
- **copytruncate**: the copy carries the old first bytes (and the checkpoint); the truncated original now
  starts with other bytes (or is shorter than its checkpoint) and is read from 0 as a new file;
- **compressed rotated files** (``app.log.2.gz``): identity and offsets are in the decompressed stream, so a
  file compressed after rotation is finished from the same checkpoint; one already read to its end is
  recognised from the gzip trailer's size, without decompressing it again;
- **a file shorter than 1 KiB** is fingerprinted over what exists (``fingerprint_len`` says how much); when
  it has grown, the old fingerprint is checked against the same prefix and, if it matches, the checkpoint
  keeps its identity and takes the longer fingerprint;
- **several files with the same first bytes** (the moment between copytruncate's copy and its truncation,
  or ``app.log.1`` beside the ``app.log.1.gz`` being written) are one file: only one of them is read (the
  one with the checkpoint's inode, else an uncompressed one, else the first by path).

Reading follows one rule, which makes parallel parts exact: a range ``[start, end)`` owns the lines whose
first byte lies in it; it reads its last line past ``end`` up to the newline; a line with no newline yet at
the end of a growing file is left for the next run (a compressed file cannot grow: its last line is read
even without a newline).

``read`` reads a range's chunks into bytes; ``read_mapped`` gives the same chunks as views of the file's
pages (mmap, ``aggregator._filemap``), which the workers use: a file that shrinks under a mapping raises
``MappingFaulted`` instead of SIGBUS, and the caller reads the range again with ``read``.
"""

from __future__ import annotations

import glob
import gzip
import os
import re
import stat
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import IO, Final, cast

import orjson

from logging_apm._native import load as load_native

try:  # CPython's own SHA-1 (the same digests): importing hashlib loads OpenSSL's libcrypto, ~2.3 ms of each
    from _sha1 import sha1  # run's start, before its workers fork
except ImportError:  # an interpreter built without it
    from hashlib import sha1

FINGERPRINT_BYTES: Final = 1024
# A line longer than this is read no further (its head is kept, the parser counts it too long): no event
# comes near it, and holding a runaway line whole would take memory in proportion to its size.
LONG_LINE_BYTES: Final = 4 << 20
# The end of a block read first to find its last newline (``_whole_lines``): far longer than an event line.
PROBE_BYTES: Final = 64 << 10
_GLOB_CHARS: Final = frozenset("*?[")
# mapped reads (``FileSource.read_mapped``); None: not built, or LOGAPM_NATIVE=0 (then ``read`` everywhere)
_filemap: ModuleType | None = load_native("aggregator._filemap")
# Directory inputs: the log files directly in the directory (not recursive), rotated ones included:
# name.log, name.log.1, name.log.1.gz, name.log-20261129(.gz), kubelet's name.log.20261129-101500(.gz),
# and the same for .json and .jsonl.
LOG_FILE_NAME: Final = re.compile(r"^.+\.(?:log|json|jsonl)(?:[.-]\d+(?:-\d+)?)?(?:\.gz)?$")
_ROTATED_SUFFIX: Final = re.compile(r"^[.-]\d+(?:-\d+)?(?:\.gz)?$|^\.gz$")


class InputError(Exception):
    """An input cannot be read: the message names the path and the problem."""


class MappingFaulted(Exception):
    """A chunk ``FileSource.read_mapped`` gave was read while its file shrank under it (copytruncate, a
    rewrite): some of its bytes read as zeros. What was made of the task's chunks must be thrown away and the
    task read again with ``FileSource.read``."""


@dataclass(frozen=True)
class Checkpoint:
    """Where one file (by identity) was read up to. ``offset`` is in the decompressed stream when
    ``compressed``; ``fingerprint`` covers the first ``fingerprint_len`` bytes."""

    identity: str
    path: str
    dev: int
    ino: int
    fingerprint: str
    offset: int
    compressed: bool = False
    fingerprint_len: int = FINGERPRINT_BYTES
    read_at: float = 0.0  # wall-clock time the position was read (finds files rotated away since)

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, s: str | bytes) -> Checkpoint:
        data = orjson.loads(s)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ReadTask:
    """A byte range of one file to read (picklable). ``final``: the range ends at the file's end as seen
    by ``scan``. The fingerprint fields let ``read``/``checkpoint_after`` work from the task alone."""

    path: str
    identity: str
    start: int
    end: int
    compressed: bool
    final: bool
    dev: int = 0
    ino: int = 0
    fingerprint: str = ""
    fingerprint_len: int = 0

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class Chunk:
    """Whole lines of one file: ``data[0]`` is at byte ``offset``; ``checkpoint`` is the position after.
    ``data`` is bytes (``read``) or a memoryview of the file's pages (``read_mapped``)."""

    source: str
    data: bytes | memoryview
    offset: int
    checkpoint: Checkpoint | None


@dataclass
class _File:
    """A file found by ``scan``: what its first bytes and its size are now."""

    path: str
    dev: int
    ino: int
    size: int  # decompressed size for .gz (from the trailer; see _gzip_size)
    compressed: bool
    head: bytes
    mtime: float = 0.0
    companion_only: bool = False  # a rotated sibling of a named file (see _expand)
    family: str = ""  # the named file it belongs to (itself or a rotated sibling); "" for other inputs

    def fingerprint(self, length: int) -> str:
        return sha1(self.head[:length]).hexdigest()


@dataclass
class ScanReport:
    """What the last ``scan`` saw besides the tasks (for the run summary)."""

    files: int = 0
    new: int = 0
    rotated: int = 0  # files found under a new name
    truncated: int = 0  # copytruncate or rewrite: read again from 0
    duplicates: int = 0  # same first bytes as another file: not read
    warnings: list[str] = field(default_factory=list)


class FileSource:
    """Files, globs and directories, read from checkpoints (see the module docstring)."""

    def __init__(self, inputs: Sequence[str]) -> None:
        if isinstance(inputs, str):
            inputs = [inputs]
        self.inputs = [os.fspath(p) for p in inputs]
        self.last_scan = ScanReport()
        for spec in self.inputs:
            self._check_input(spec)

    # --- inputs --------------------------------------------------------------------------------------

    @staticmethod
    def _check_input(spec: str) -> None:
        if not spec:
            raise InputError("an empty input path was given")
        if _GLOB_CHARS & set(spec):
            parent = Path(spec).parent
            while _GLOB_CHARS & set(str(parent)):
                parent = parent.parent
            if not parent.is_dir():
                raise InputError(f"{spec}: no such directory {parent} for this pattern")
            return
        path = Path(spec)
        try:
            st = path.stat()
        except FileNotFoundError:
            if _rotated_siblings(spec):
                return  # caught between a rotation's rename and the new file's creation: not a mistake
            raise InputError(f"{spec}: no such file or directory") from None
        except OSError as exc:
            raise InputError(f"{spec}: cannot be read ({exc.strerror or exc})") from None
        if stat.S_ISDIR(st.st_mode):
            if spec.endswith(os.sep) or not LOG_FILE_NAME.match(path.name):
                if not os.access(path, os.R_OK | os.X_OK):
                    raise InputError(f"{spec}: directory cannot be listed (permission denied)")
                return
            raise InputError(
                f"{spec}: is a directory, not a log file (to read the log files in it, name it with a "
                f"trailing '/')"
            )
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{spec}: not a regular file (pipes and devices cannot be read from a checkpoint)")
        if not os.access(path, os.R_OK):
            raise InputError(f"{spec}: cannot be read (permission denied)")

    def _expand(self) -> list[tuple[str, bool, str]]:
        """(path, companion_only, family) of every candidate file, each once (a plain input wins over a
        companion)."""
        out: dict[str, tuple[bool, str]] = {}

        def add(p: str, companion: bool = False, family: str = "") -> None:
            key = os.path.realpath(p)
            if key not in out or (out[key][0] and not companion):
                out[key] = (companion, family)

        def add_named(p: str) -> None:
            # A named (or glob-matched) file's rotated siblings (app.log.1, app.log.2.gz,
            # app.log-20261129, 0.log.20261129-101500.gz) may hold the end of a file read last run, or a
            # whole file started and rotated away since: read in those two cases only (see scan), never
            # as history from before the first run.
            add(p, family=p)
            for sibling in _rotated_siblings(p):
                add(sibling, companion=True, family=p)

        for spec in self.inputs:
            if _GLOB_CHARS & set(spec):
                for p in sorted(glob.glob(spec)):
                    if os.path.isfile(p):
                        add_named(p)
            elif os.path.isdir(spec):
                try:
                    names = sorted(os.listdir(spec))
                except OSError:
                    continue
                for name in names:
                    p = os.path.join(spec, name)
                    if LOG_FILE_NAME.match(name) and os.path.isfile(p):
                        add(p)
            else:
                add_named(spec)
        return [(p, c, fam) for p, (c, fam) in out.items()]

    def _open_file(self, path: str, companion: bool, family: str, report: ScanReport) -> _File | None:
        compressed = path.endswith(".gz")
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None  # rotated away between listing and opening: the next scan finds it
        except OSError as exc:
            if companion:
                return None
            raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return None
            if not compressed:
                head = f.read(FINGERPRINT_BYTES)
                return _File(path, st.st_dev, st.st_ino, st.st_size, False, head, st.st_mtime, companion, family)
            size = _gzip_size(f, st.st_size)
            f.seek(0)
            try:
                with gzip.GzipFile(fileobj=f) as gz:
                    head = gz.read(FINGERPRINT_BYTES)
            except (OSError, EOFError, zlib.error) as exc:
                # Typically a file being compressed right now: the next scan sees it whole.
                report.warnings.append(f"{path}: skipped this run, not a complete gzip file ({exc})")
                return None
            if size is None or size < len(head):
                size = len(head)
            return _File(path, st.st_dev, st.st_ino, size, True, head, st.st_mtime, companion, family)

    # --- scan ----------------------------------------------------------------------------------------

    def scan(self, checkpoints: Mapping[str, Checkpoint]) -> list[ReadTask]:
        """What to read now: one task per file with unread lines, from its checkpoint."""
        report = ScanReport()
        self.last_scan = report
        files = [f for p, c, fam in self._expand() if (f := self._open_file(p, c, fam, report)) is not None]
        files = [f for f in files if f.head]  # an empty file has nothing to read and no identity yet
        report.files = len(files)

        # Match each file to a checkpoint by fingerprint, one prefix length at a time (nearly always one).
        by_len: dict[int, dict[str, Checkpoint]] = {}
        for known in checkpoints.values():
            by_len.setdefault(known.fingerprint_len, {})[known.fingerprint] = known
        claims: dict[str, list[_File]] = {}  # identity -> files with those first bytes
        matched: dict[str, Checkpoint] = {}
        fresh: dict[str, list[_File]] = {}
        unknown: list[_File] = []
        followed: dict[str, float] = {}  # family -> when one of its files was last read
        lengths = sorted(by_len, reverse=True)  # the longest matching prefix decides
        for f in files:
            cp = None
            for length in lengths:
                table = by_len[length]
                if len(f.head) >= length:
                    cp = table.get(f.fingerprint(length))
                    if cp is not None:
                        break
            if cp is not None:
                claims.setdefault(cp.identity, []).append(f)
                matched[cp.identity] = cp
                if f.family:
                    followed[f.family] = max(followed.get(f.family, 0.0), cp.read_at)
            else:
                unknown.append(f)
        for f in unknown:
            # A rotated sibling nobody has read: read it if it was written after this family was last
            # read (a file started and rotated away between two runs); else it is history from before
            # the first run, which a named-file input does not ask for.
            if f.companion_only and not (f.family in followed and f.mtime >= followed[f.family]):
                continue
            fresh.setdefault(f.fingerprint(len(f.head)), []).append(f)

        tasks: list[ReadTask] = []
        for identity, group in claims.items():
            cp = matched[identity]
            f = self._pick(group, cp, report)
            if f.path != cp.path:
                report.rotated += 1
            if not f.compressed and f.size < cp.offset:
                # Same first bytes but shorter than what was read: truncated and rewritten. Read it again.
                report.truncated += 1
                start = 0
            else:
                start = cp.offset
            if f.compressed and start > 0 and f.size % (1 << 32) == start % (1 << 32):
                continue  # read to its end already (the trailer's size is modulo 4 GiB)
            if start >= f.size and not f.compressed:
                continue
            tasks.append(self._task(f, identity, start))
        taken = set(claims)
        for fp, group in fresh.items():
            f = self._pick(group, None, report)
            identity = fp if fp not in taken and fp not in checkpoints else f"{fp}:{f.dev}:{f.ino}"
            taken.add(identity)
            report.new += 1
            tasks.append(self._task(f, identity, 0))
        return tasks

    @staticmethod
    def _pick(group: list[_File], cp: Checkpoint | None, report: ScanReport) -> _File:
        """One file among files with the same first bytes (see the module docstring)."""
        if len(group) > 1:
            report.duplicates += len(group) - 1

        def rank(f: _File) -> tuple[int, int, int, str]:
            same_inode = cp is not None and (f.dev, f.ino) == (cp.dev, cp.ino) and f.compressed == cp.compressed
            return (0 if same_inode else 1, 1 if f.compressed else 0, 1 if f.companion_only else 0, f.path)

        return min(group, key=rank)

    @staticmethod
    def _task(f: _File, identity: str, start: int) -> ReadTask:
        length = min(len(f.head), FINGERPRINT_BYTES)
        end = f.size
        if f.compressed:
            # The trailer's size is modulo 4 GiB: make sure end is not before start.
            while end < start:
                end += 1 << 32
        return ReadTask(f.path, identity, start, end, f.compressed, True, f.dev, f.ino,
                        f.fingerprint(length), length)

    # --- read ----------------------------------------------------------------------------------------

    def read(self, task: ReadTask, chunk_bytes: int = 8 << 20) -> Iterator[Chunk]:
        """Chunks of whole lines whose first byte lies in ``[task.start, task.end)`` (see the module
        docstring for the rule at both ends). Yields nothing when the file is gone or is no longer the
        file the task was made for (rotated away, or truncated, since the scan: the next scan sorts it
        out)."""
        chunk_bytes = max(1, chunk_bytes)
        raw = self._open_task(task)
        if raw is None:
            return
        with raw:
            stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw)) if task.compressed else raw
            try:
                yield from self._read_lines(stream, task, chunk_bytes)
            except (OSError, EOFError, zlib.error):
                return  # a damaged or still-being-written .gz: what was complete was yielded
            finally:
                if stream is not raw:
                    stream.close()

    def read_mapped(self, task: ReadTask, chunk_bytes: int = 8 << 20) -> Iterator[Chunk]:
        """``read``'s chunks (the same lines, offsets and checkpoints), each chunk's ``data`` a memoryview of
        the file's pages (``aggregator._filemap``) instead of bytes read into memory; for a compressed file,
        or without the extension, ``read``'s own.

        read() copies each byte from the page cache into the chunk: the kernel's copy was 12% of the
        workers' CPU on the 5M-event benchmark log. Mapped, the scanner reads the pages in place; its first
        pass over them is now the first to bring them from memory, which took about half of that back until
        it asked for them ahead (parsers/_scan.c, PREFETCH_AHEAD). A mapping is populated when made
        (MAP_POPULATE) and unmapped when its chunk is let go: at most two chunks' pages are mapped at a time
        (the consumer's, the next).

        Raises ``MappingFaulted`` when the consumer asks for the next chunk (or the end) after a chunk whose
        file shrank under it (a page gone, which read as zeros instead of SIGBUS, or a file now shorter than
        the chunk's end); the consumer then throws away what it made of this task and reads it again with
        ``read``, which sees the truncation as it always did (``engine.process_part``)."""
        chunk_bytes = max(1, chunk_bytes)
        if task.compressed or _filemap is None:
            yield from self.read(task, chunk_bytes)
            return
        raw = self._open_task(task)
        if raw is None:
            return
        with raw:
            try:
                yield from self._mapped_lines(raw, task, chunk_bytes, _filemap)
            except OSError:
                return  # as read(): an I/O error ends the task's chunks

    @staticmethod
    def _open_task(task: ReadTask) -> IO[bytes] | None:
        """The task's file opened, or None when it is gone or no longer the file the task was made for."""
        try:
            raw = open(task.path, "rb")  # noqa: SIM115 - the caller closes it
        except OSError:
            return None
        try:
            st = os.fstat(raw.fileno())
            if task.dev and (st.st_dev, st.st_ino) != (task.dev, task.ino):
                raw.close()
                return None
            if task.fingerprint and not task.compressed:
                # Same inode but other first bytes: truncated (copytruncate) since the scan. Reading from
                # the old offset would read the new content under the old identity.
                head = raw.read(task.fingerprint_len)
                if sha1(head).hexdigest() != task.fingerprint:
                    raw.close()
                    return None
                raw.seek(0)
        except OSError:
            raw.close()
            return None
        return raw

    def _mapped_lines(self, f: IO[bytes], task: ReadTask, chunk_bytes: int, filemap: ModuleType) -> Iterator[Chunk]:
        """``_read_lines`` of a plain file with each block mapped rather than read: the same chunks (a block's
        lines up to its last newline, looked for in its last ``PROBE_BYTES`` first, then in the whole block);
        a block without a newline goes to ``_read_lines`` (a line longer than a block), as does one that
        cannot be mapped (a file system without mmap)."""
        pos, end = _line_start(f, task.start), task.end
        if pos < 0 or pos >= end:
            return
        fd = f.fileno()
        while True:  # pos < end, a line start
            size = min(chunk_bytes, os.fstat(fd).st_size - pos)
            if size <= 0:
                return  # the file ends at pos
            try:
                mapping = filemap.map(fd, pos, size)
            except OSError:
                yield from self._read_lines(f, replace(task, start=pos), chunk_bytes)
                return
            nl = mapping.rfind_newline(size - min(PROBE_BYTES, size))
            if nl < 0:
                nl = mapping.rfind_newline(0)
            if nl < 0:
                del mapping
                if size < chunk_bytes:
                    return  # a partial last line (no newline yet): left for the next run
                yield from self._read_lines(f, replace(task, start=pos), chunk_bytes)
                return
            limit = end - pos  # lines starting at an index below this are the range's (limit >= 1)
            last = nl >= limit - 1
            if last:  # the range ends here: its last line is the one holding byte limit - 1
                nl = mapping.find_newline(limit - 1)
            yield self._chunk(task, memoryview(mapping)[: nl + 1], pos)
            # The consumer is done with the chunk. A page that was gone read as zeros (and faulted was set);
            # a file cut inside the chunk's last page reads zeros past its end without a fault: its size says.
            if mapping.faulted or os.fstat(fd).st_size < pos + nl + 1:
                raise MappingFaulted(f"{task.path}: the file shrank while bytes {pos}-{pos + nl + 1} were read")
            del mapping
            if last:
                return
            pos += nl + 1

    def _read_lines(self, f: IO[bytes], task: ReadTask, chunk_bytes: int) -> Iterator[Chunk]:
        pos = task.start
        if task.compressed:
            # Never split, and only ever started at a checkpoint: ``start`` is a line start. A compressed
            # file is complete, so it is read to the end of its stream, whatever the trailer said.
            _skip(f, pos)
            end = float("inf")
        else:
            end = task.end
            pos = _line_start(f, pos)
            if pos < 0 or pos >= end:
                return
        buf = b""  # unread bytes from ``pos`` (a line start) on
        longest = max(chunk_bytes, LONG_LINE_BYTES)
        # A plain file's block is read straight into its chunk once its last newline is known (_whole_lines);
        # else (a long line at the block's end, the file's end) into one reused buffer, and a chunk's lines
        # copied out of it once. Either way the partial line at its end is read again with the next block
        # (from the page cache). Reading into a fresh bytes object per block, then carrying the partial line
        # over (``buf + block``), cost twice as much: new pages to fault in for every block, and the block
        # copied once more (a 2 MB-chunked part: 0.29 -> 0.15 CPU us/event). Lines longer than a block take
        # the general path below.
        area = None if task.compressed else bytearray(chunk_bytes)
        view = None if area is None else memoryview(area)
        while True:
            if area is not None and not buf:
                data = _whole_lines(f, pos, chunk_bytes)
                if data is not None:
                    if len(data) >= end - pos:  # the range ends here (as below)
                        stop = data.find(b"\n", int(end - pos) - 1) + 1
                        yield self._chunk(task, data if stop == len(data) else data[:stop], pos)
                        return
                    yield self._chunk(task, data, pos)
                    pos += len(data)
                    continue
            if area is not None and view is not None and not buf:
                got = f.readinto(view)  # type: ignore[attr-defined]  # a plain file: a BufferedReader
                if not got:
                    return  # a partial last line (or none): left for the next run
                last_nl = area.rfind(b"\n", 0, got)
                if last_nl >= 0:
                    limit = end - pos
                    if last_nl >= limit - 1:  # the range ends here (as below)
                        stop = area.find(b"\n", int(limit) - 1, got) + 1
                        yield self._chunk(task, bytes(view[:stop]), pos)
                        return
                    yield self._chunk(task, bytes(view[: last_nl + 1]), pos)
                    pos += last_nl + 1
                    f.seek(pos)
                    continue
                block = bytes(view[:got])
            else:
                block = f.read(chunk_bytes)
            if not block:
                if buf and task.compressed:
                    yield self._chunk(task, buf, pos)  # the last line of a complete file, no newline
                return  # else a partial last line: left for the next run
            buf = buf + block if buf else block
            last_nl = buf.rfind(b"\n")
            if last_nl < 0:
                if len(buf) <= longest:
                    continue  # one line longer than what was read so far
                # A line longer than that is no event (the parser's limit is far lower): hand on its
                # head, which the parser counts as too long, and skip the rest without holding it, so
                # one huge line cannot take memory in proportion to its size.
                after = _skip_line(f, pos + len(buf))
                if after < 0:
                    return  # no newline yet: the next run skips it again
                head = buf[:longest] + b"\n"
                yield Chunk(task.path, head, pos, FileSource.checkpoint_after(task, after))
                pos, buf = after, b""
                if pos >= end:
                    return
                continue
            limit = end - pos  # lines starting at an index below this are the range's (limit >= 1)
            if last_nl >= limit - 1:
                # The range ends here: its last line is the one holding byte limit - 1.
                stop = buf.find(b"\n", int(limit) - 1) + 1
                yield self._chunk(task, buf[:stop], pos)
                return
            yield self._chunk(task, buf[: last_nl + 1], pos)
            pos += last_nl + 1
            buf = buf[last_nl + 1 :]

    @staticmethod
    def _chunk(task: ReadTask, data: bytes | memoryview, pos: int) -> Chunk:
        return Chunk(task.path, data, pos, FileSource.checkpoint_after(task, pos + len(data)))

    # --- parallel parts --------------------------------------------------------------------------------

    def split(self, task: ReadTask, parts: int) -> list[ReadTask]:
        """Contiguous ranges covering ``task`` for parallel readers (a compressed file stays whole)."""
        if task.compressed or parts <= 1 or task.end - task.start < 2 * parts:
            return [task]
        step = (task.end - task.start) // parts
        bounds = [task.start + i * step for i in range(parts)] + [task.end]
        return [
            replace(task, start=bounds[i], end=bounds[i + 1], final=task.final and i == parts - 1)
            for i in range(parts)
        ]

    @staticmethod
    def checkpoint_after(task: ReadTask, offset: int) -> Checkpoint:
        """The checkpoint of ``task``'s file positioned at ``offset``."""
        return Checkpoint(
            identity=task.identity,
            path=task.path,
            dev=task.dev,
            ino=task.ino,
            fingerprint=task.fingerprint,
            offset=offset,
            compressed=task.compressed,
            fingerprint_len=task.fingerprint_len or FINGERPRINT_BYTES,
            read_at=time.time(),
        )


def _rotated_siblings(path: str) -> list[str]:
    """The rotated forms of ``path`` beside it (path.1, path.2.gz, path-20261129, ...), regular files only."""
    parent, base = os.path.split(path)
    try:
        names = os.listdir(parent or ".")
    except OSError:
        return []
    return [
        os.path.join(parent, name)
        for name in sorted(names)
        if name != base and name.startswith(base) and _ROTATED_SUFFIX.match(name[len(base):])
        and os.path.isfile(os.path.join(parent, name))
    ]


def _gzip_size(f: IO[bytes], file_size: int) -> int | None:
    """The decompressed size from the gzip trailer (ISIZE, modulo 4 GiB), or None."""
    if file_size < 18:
        return None
    f.seek(file_size - 4)
    trailer = f.read(4)
    return int.from_bytes(trailer, "little") if len(trailer) == 4 else None


def _skip(f: IO[bytes], n: int) -> None:
    """Advance a (decompressing) stream by ``n`` bytes."""
    while n > 0:
        got = len(f.read(min(n, 1 << 20)))
        if got == 0:
            return
        n -= got


def _whole_lines(f: IO[bytes], pos: int, size: int) -> bytes | None:
    """The whole lines of the ``size`` bytes at ``pos`` of a plain file, read straight into the bytes object
    the chunk holds (the file is left after them); None when the last ``PROBE_BYTES`` of those bytes hold no
    newline, end the file or were not all there (then the file is back at ``pos``, for the general path).
    The block's last newline is found in a small read of its end first, so that the block itself is read
    once, into its own bytes: reading it into a buffer and copying its lines out cost a second copy of the
    chunk (about 0.04 CPU us per event of the 1M-event benchmark log)."""
    probe = min(PROBE_BYTES, size)
    f.seek(pos + size - probe)
    nl = f.read(probe).rfind(b"\n")
    f.seek(pos)
    if nl < 0:
        return None
    want = size - probe + nl + 1
    data = f.read(want)
    if len(data) != want or data[-1:] != b"\n":  # changed since the probe: the general path reads it again
        f.seek(pos)
        return None
    return data


def _line_start(f: IO[bytes], pos: int) -> int:
    """The first line start at or after ``pos`` in a seekable file (-1: none yet). ``pos`` starts a line when
    it is 0 or the byte before it is a newline; else the line that began before it belongs to the range
    before: skip to its end."""
    if pos > 0:
        f.seek(pos - 1)
        if f.read(1) != b"\n":
            return _skip_line(f, pos)
    return pos


def _skip_line(f: IO[bytes], pos: int) -> int:
    """Move past the rest of the line at ``pos`` in a seekable file; the position after its newline (the
    file is left there), or -1 when the line has no newline yet."""
    while True:
        buf = f.read(64 * 1024)
        if not buf:
            return -1
        i = buf.find(b"\n")
        if i >= 0:
            f.seek(pos + i + 1)
            return pos + i + 1
        pos += len(buf)
