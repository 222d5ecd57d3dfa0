"""The local parallel engine: read + parse + accumulate in worker processes, merge in the parent.

Each source ``ReadTask`` is split into parts of about ``PART_BYTES`` (``FileSource.split``, the cuts moved to
where the lines' window changes: ``window_cuts``); a pool of forked workers takes one part at a time, reads it
in chunks of ``CHUNK_BYTES`` (a plain file's mapped, ``FileSource.read_mapped``: the part is read again with
``read`` if its file shrank), parses each chunk and folds its events into a ``WindowAccumulator`` (flushed per
chunk), and returns a ``PartResult``: the part's partial aggregates (sketches and exact counters), its counts,
its dead letters, the trace records for the insights, and the checkpoint after its last complete line.

Memory does not grow with the input: a worker holds one chunk and its part's aggregates (bounded by the
number of series), and the parent keeps at most ``workers + 1`` parts in flight, taking results in input
order (the trace insights need records in input order, and checkpoints advance in order).
"""

from __future__ import annotations

import calendar
import ctypes
import gc
import itertools
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, is_dataclass, replace
from multiprocessing.pool import AsyncResult, Pool
from typing import Any, Final, cast

from aggregator.model import Tags, WindowAggregate
from aggregator.optional import optional_attr
from aggregator.windows import AggregateColumns, WindowAccumulator

# 4 MB. With one Python object per event, 2 MB chunks halved a worker's working memory (about 44 -> 24 MB
# of Python allocations, tracemalloc) at no CPU cost. With the native scanner's columns a chunk costs little
# memory and its fixed costs (numpy calls per kind and per trace piece, a trace batch for the parent) show:
# on the 5M-event benchmark log, 2 -> 4 MB took the workers' CPU 7.1-8.0 -> 6.4-6.9 s, the parent's 2.4-2.7
# -> 2.1-2.6 s and the wall 5.1-5.5 -> 4.5-5.0 s, for 11 MB more peak RSS per worker (55 -> 66 MB; 8 MB
# chunks: no faster, 92 MB). Three interleaved rounds.
CHUNK_BYTES: Final = 4 << 20
# 48 MB. Each part has fixed costs on both sides (a fresh accumulator registering its series, the fold and
# the pickle of its windows and trace batches, the parent's unpickle and merge, the pool's task and result
# threads): once the per-event work went to C (the seventh pass) they showed, and larger parts run faster:
# 5M-event log, in-process runs, medians of 4 (quiet machine, 23:00 UTC): 32 MB 1.39 s, 48 MB 1.32, 64 MB
# 1.30, 128 MB 1.22. But a part's trace batches (and its buffered columns, FOLD_EVENTS) wait in its worker for
# its end, so the peak memory grows with the part; it was 32 MB while 10M events took the process tree's
# peak RSS/PSS to 243/195 MB at 32 MB, 255/208 at 64. With the file's pages mapped (read_mapped) and the cuts
# moved to windows' ends (below), 32 -> 48 MB: peak RSS/PSS 1M 176/123 -> 180/127 MB, 5M 208/158 -> 227/175,
# 10M 220-223/161-165 -> 237-238/178-179 (64 MB: 10M 254/197, past the 250 MB budget); 5M in-process, 6
# interleaved rounds on a shared machine (load 3-5): the parent's CPU 0.83 -> 0.79 s (paired ratio 0.951),
# the workers' 2.57 -> 2.54 s (0.992), the last part in 2.47 -> 2.44 s; callgrind, the workers over 256 MB
# of it 3,372 -> 3,352 M instructions, the parent's work on the parts' results 2,786 -> 2,727 M. Sending a
# part's trace batches as they are made would allow larger parts still.
PART_BYTES: Final = 48 << 20
# Parts end where a window ends. A part cut inside a window sends that window once from each side: the
# worker on each side makes its own aggregate (a segment of the fold, a sketch, its pickle) and the parent
# merges the two (a second entry, a sketch merge, a second (window, route) group of the trace sums). A log
# is about in time order, and a 32 MB part of the 5M-event log holds about a minute of it: cut at byte
# offsets, 5,742 of its ~6,300 windows were cut in two (12,042 aggregates sent; 6,237 with the cuts moved).
# So each cut moves to the nearest line within half a part (the parts stay about even) where the lines'
# window changes (``window_cuts``: an interpolation search over the file's bytes, 8.5 reads of
# ALIGN_PROBE_BYTES a cut on that log, ~0.15 ms; each cut is made as its part is sent). The parent's work on
# that log's parts (unpickle, merge, trace feed, finish; callgrind, the same parts' results): 3.07 -> 2.82 G
# instructions, the merge 3.4x cheaper; the workers', 256 MB of it, +0.36% (a part is no longer a multiple
# of CHUNK_BYTES: its last chunk, a few hundred KB, adds a chunk's fixed costs; chunks evened out to avoid it
# took 8-12 MB more peak RSS). A log out of time order, or with lines longer than a probe, may find no
# such line: the cut stays. The windows are the same for any cuts (a window's sum added in another grouping:
# within float rounding).
ALIGN_PROBE_BYTES: Final = 4096
_STAMP_KEY: Final = b'"timestamp":"'
# glibc malloc for a run's processes: a chunk's numpy columns and a part's pickled result are arrays of a
# few MB, which glibc's default (mmap above a dynamic threshold, trim the heap top past 128 KB) maps and
# unmaps again chunk after chunk, page-faulting every page in afresh. Served from a heap that keeps what
# it freed instead (tune_malloc, in the workers and the CLI's process): the workers' system CPU on the 1M
# log 0.34-0.53 -> 0.13-0.22 s, the process tree's CPU x0.955 (1M) and x0.89 (5M), medians of 7 rounds;
# peak PSS 161 -> 169 MB (1M), 192 -> 192 MB (5M), 203 -> 210 MB (10M): under the 250 MB limit.
# One arena (M_ARENA_MAX 1) for all of a process's threads: the CLI's pool threads unpickle the parts in
# an arena of their own otherwise, so what the main thread frees of them (it merges them) never serves its
# own allocations, and the end of the run (the trace join's finish, the commit, the alert catch-up's
# matrices) page-faults fresh memory in. With one arena, 5M-event log, 15 interleaved rounds (load average
# 2.5-9): the parent's minor faults after the last part 11,003 -> 9,050, its peak RSS 147 -> 138 MB, the
# main thread's CPU from the last part to the end 171.7 -> 167.8 ms (paired median ratio 0.972), the
# parent's CPU x0.993. The threads allocate under the GIL, but for SQLite's checkpoint thread: little to
# contend for. (A worker is one thread: no change there.)
# (mallopt parameter, value): M_MMAP_THRESHOLD 256 MB, M_TRIM_THRESHOLD 512 MB, M_TOP_PAD 64 MB, M_ARENA_MAX
# 1. A glibc before 2.35 refuses an mmap threshold above 32 MB (HEAP_MAX_SIZE / 2 on 64 bits): it gets 32 MB,
# still far above a chunk's arrays, and the rest as here.
MALLOC_OPTIONS: Final = ((-3, 256 << 20), (-1, 512 << 20), (-2, 64 << 20), (-8, 1))
MMAP_THRESHOLD_FALLBACK: Final = 32 << 20
TRACE_EXTRACT: Final = ("aggregator.insights.traces", "extract")
TRACE_EXTRACT_COLUMNS: Final = ("aggregator.insights.columns", "extract_columns")
TRACE_FINISH_PART: Final = ("aggregator.insights.traces", "finish_part")


@dataclass(frozen=True, slots=True)
class EngineSettings:
    window_seconds: int = 60
    apdex_t_ms: float = 500.0
    slow_query_ms: float = 100.0
    now: float = 0.0
    max_future_seconds: float = 600.0
    max_past_seconds: float | None = None
    chunk_bytes: int = CHUNK_BYTES
    part_bytes: int = PART_BYTES
    workers: int = 2
    traces: bool = True  # run the insights' extract() when the module is installed
    # The series cap and the series the store admitted before the run (per family, at most the cap each):
    # workers fold a family's new series past the cap into `other` as they read, so their memory follows the
    # cap, not the distinct tag values of the input. None: no cap in the workers (the commit still caps).
    max_series: int | None = None
    admitted: dict[str, frozenset[Tags]] = field(default_factory=dict, hash=False)


@dataclass(slots=True)
class PartResult:
    """What one worker returns for one part of one read task."""

    task_index: int
    part_index: int
    # a worker's come as columns (``_work``); iterating either gives the aggregates
    aggregates: list[WindowAggregate] | AggregateColumns = field(default_factory=list)
    lines: int = 0
    skipped: int = 0
    events: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    invalid: dict[str, int] = field(default_factory=dict)
    dead_letters: list[Any] = field(default_factory=list)
    trace_records: list[Any] = field(default_factory=list)
    max_ts: float | None = None
    bytes_read: int = 0
    checkpoint: Any = None  # after the part's last complete line; None when it read nothing
    folded: dict[str, int] = field(default_factory=dict)  # family -> new series folded into `other` here


def _trace_extractor(enabled: bool, where: tuple[str, str] = TRACE_EXTRACT) -> Callable[..., list[Any]] | None:
    fn = optional_attr(*where) if enabled else None
    return fn if callable(fn) else None


def _make_parser(settings: EngineSettings) -> Any:
    from parsers import LineParser

    kw: dict[str, Any] = {}
    if settings.max_past_seconds is not None:  # else the parser's own bound (timestamps that cannot be right)
        kw["max_past_seconds"] = settings.max_past_seconds
    return LineParser(now=settings.now, max_future_seconds=settings.max_future_seconds, **kw)


def process_part(source: Any, task: Any, settings: EngineSettings, task_index: int = 0, part_index: int = 0,
                 progress: Any = None) -> PartResult:
    """Read, parse and accumulate one part (runs in a worker, or in-process for small inputs)."""
    # Decoding allocates hundreds of thousands of short-lived objects and none of them form cycles: the
    # cyclic GC would only rescan the heap again and again.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        # A file source's mapped chunks (the file's pages read in place, not copied: see
        # FileSource.read_mapped); when the file shrank under one, the part is read again with read().
        read_mapped = getattr(source, "read_mapped", None)
        if read_mapped is not None:
            from aggregator.sources import MappingFaulted

            done = [0]
            try:
                return _process_part(read_mapped, task, settings, task_index, part_index, progress, done)
            except MappingFaulted:
                if progress is not None:  # the bytes will be counted again
                    with progress.get_lock():
                        progress.value -= done[0]
        return _process_part(source.read, task, settings, task_index, part_index, progress, [0])
    finally:
        if was_enabled:
            gc.enable()


def _process_part(read: Callable[[Any, int], Iterator[Any]], task: Any, settings: EngineSettings,
                  task_index: int, part_index: int, progress: Any, done: list[int]) -> PartResult:
    parser = _make_parser(settings)
    extract = _trace_extractor(settings.traces)
    extract_columns = _trace_extractor(settings.traces, TRACE_EXTRACT_COLUMNS)
    finish_part = _trace_extractor(settings.traces, TRACE_FINISH_PART)
    # A chunk arrives as pieces in input order: the runs of lines the native scanner takes as columns, the
    # others (declined lines, blocks it gives up on) as events, through the same stages' object paths. Both
    # stages give the same results for any split of the events into batches, columns and events mixed
    # (tests hold each pair to the other).
    if extract is None or extract_columns is not None:
        parse = parser.parse_columns
    else:
        def parse(data: bytes, source: str, offset: int) -> list[Any]:
            return [parser.parse(data, source, offset)]
    acc = WindowAccumulator(settings.window_seconds, settings.apdex_t_ms, settings.slow_query_ms,
                            max_series=settings.max_series, admitted=settings.admitted)
    out = PartResult(task_index, part_index)
    invalid = out.invalid
    for chunk in read(task, settings.chunk_bytes):
        for res in parse(chunk.data, chunk.source, chunk.offset):
            cols = res.columns
            if cols is not None:
                acc.add_columns(cols)
                if extract_columns is not None and cols.n:
                    out.trace_records.extend(extract_columns(cols))
            else:
                events = res.events
                acc.add(events)
                if extract is not None and events:
                    out.trace_records.extend(extract(events))
            out.lines += res.lines
            out.skipped += res.skipped
            for reason, n in res.invalid.items():
                invalid[reason] = invalid.get(reason, 0) + n
            out.dead_letters.extend(res.dead_letters)
        out.bytes_read += len(chunk.data)
        out.checkpoint = chunk.checkpoint
        if progress is not None:
            with progress.get_lock():
                progress.value += len(chunk.data)
            done[0] += len(chunk.data)
    if finish_part is not None and out.trace_records:
        # the part's requests summed per window and route here, not request by request in the parent
        out.trace_records = finish_part(out.trace_records, settings.window_seconds)
    out.aggregates = acc.take()
    out.events = acc.events
    out.by_kind = dict(acc.by_kind)
    out.max_ts = acc.max_ts
    out.folded = dict(acc.folded)
    return out


def _stamp_seconds(data: bytes, at: int, minutes: dict[bytes, int]) -> float | None:
    """The seconds since the epoch of the timestamp whose key is at ``at`` in ``data`` (None: not
    YYYY-MM-DDTHH:MM:SS[.fff]); ``minutes``: epoch seconds by minute, as read so far."""
    start = at + len(_STAMP_KEY)
    stamp = data[start:start + 23]
    if len(stamp) < 19 or stamp[10:11] != b"T" or stamp[16:17] != b":":
        return None
    minute = minutes.get(stamp[:16])
    try:
        if minute is None:
            minute = minutes[stamp[:16]] = calendar.timegm((int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]),
                                                             int(stamp[11:13]), int(stamp[14:16]), 0))
        seconds = minute + int(stamp[17:19])
        # (the milliseconds place the probes; a window is whole seconds: never moved by them)
        return seconds + int(stamp[20:23]) / 1000.0 if stamp[19:20] == b"." and stamp[20:23].isdigit() else seconds
    except ValueError:
        return None


def _time_after(fd: int, pos: int, minutes: dict[bytes, int]) -> tuple[int, float] | None:
    """Where a range beginning at ``pos`` starts reading (``pos`` when it starts a line, else the next line's
    start; ``FileSource.read``'s rule) and the seconds of the first timestamp in ``ALIGN_PROBE_BYTES`` from
    there. None: no line start or no timestamp there (a long line, not a log of events)."""
    data = os.pread(fd, ALIGN_PROBE_BYTES + 1, pos - 1) if pos > 0 else b"\n" + os.pread(fd, ALIGN_PROBE_BYTES, 0)
    nl = data.find(b"\n")
    if nl < 0:
        return None
    at = data.find(_STAMP_KEY, nl)
    seconds = _stamp_seconds(data, at, minutes) if at >= 0 else None
    return None if seconds is None else (pos + nl, seconds)


def _first_from(fd: int, lo: tuple[int, float], hi: tuple[int, float], since: int,
                minutes: dict[bytes, int]) -> int | None:
    """The first line start after ``lo`` whose time is ``since`` or later, given (position, seconds) at ``lo``
    (earlier) and at ``hi`` (not): the range narrowed down to a probe's length, then the lines of that probe in
    turn (the times of a log in time order do not go back). Each probe is placed where the times at the ends
    put ``since`` (a log's rate is about steady: 3-4 probes where halving took 12), or halfway after a guess
    that did not halve the range. None: a probe found no timestamp."""
    (a, ta), (b, tb) = lo, hi
    halve = False
    while b - a > ALIGN_PROBE_BYTES:
        if halve or tb <= ta:
            mid = (a + b) // 2
        else:
            mid = a + int((b - a) * (since - ta) / (tb - ta))
            mid = min(max(mid, a + ALIGN_PROBE_BYTES // 2), b - ALIGN_PROBE_BYTES // 2)
        got = _time_after(fd, mid, minutes)
        if got is None:
            return None
        was = b - a
        if got[1] >= since:
            b, tb = mid, got[1]
        else:
            a, ta = mid, got[1]
        halve = not halve and 2 * (b - a) > was
    # the lines starting in a + 1 .. b: the first late enough (else the line read from b)
    data = os.pread(fd, b - a + ALIGN_PROBE_BYTES, a)
    line = data.find(b"\n") + 1
    while 0 < line <= b - a:
        at = data.find(_STAMP_KEY, line)
        end = data.find(b"\n", line)
        if 0 <= at < end:
            seconds = _stamp_seconds(data, at, minutes)
            if seconds is None:
                return None
            if seconds >= since:
                return a + line
        line = end + 1
    found = _time_after(fd, b, minutes)
    return None if found is None else found[0]


def window_cuts(path: str, bounds: Sequence[int], width: int) -> Iterator[int]:
    """``bounds`` (a file's parts: ascending offsets) with each cut but the first and last moved to the nearest line
    start within half a part where the lines' window changes (see ``ALIGN_PROBE_BYTES``); a cut that finds none,
    or would not stay after the cut before it, stays. Lazily: a cut is searched for as it is taken (the engine
    takes a part's end as it sends the part, while the workers read the parts before)."""
    last = len(bounds) - 1
    yield bounds[0]
    fd = None
    if last >= 2 and type(width) is int and width > 0:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            fd = None
    minutes: dict[bytes, int] = {}
    prev = bounds[0]
    try:
        for i in range(1, last):
            cut = bounds[i]
            if fd is not None:
                try:
                    cut = _window_cut(fd, prev, bounds[i - 1:i + 2], width, minutes)
                except OSError:  # (the file changed since the scan: the reader finds out; the cuts stay)
                    os.close(fd)
                    fd = None
            prev = cut
            yield cut
    finally:
        if fd is not None:
            os.close(fd)
    yield bounds[last]


def _window_cut(fd: int, prev: int, around: Sequence[int], width: int, minutes: dict[bytes, int]) -> int:
    """The cut ``around[1]`` (between ``around[0]`` and ``around[2]``) moved to the nearest change of window
    within half a part, after ``prev`` (the cut before it, as moved); else where it is."""
    before_cut, cut, after_cut = around
    half = (after_cut - before_cut) // 4
    at = _time_after(fd, cut, minutes)
    if at is None:
        return cut
    here = int(at[1] // width)
    found = []
    lo, hi = max(cut - half, prev), min(cut + half, after_cut - 1)
    start = _time_after(fd, lo, minutes) if lo < cut else None  # the cut's window starts in the range: there
    if start is not None and int(start[1] // width) < here:
        found.append(_first_from(fd, (lo, start[1]), (cut, at[1]), here * width, minutes))
    end = _time_after(fd, hi, minutes) if hi > cut else None  # the next window starts in the range: there
    if end is not None and int(end[1] // width) > here:
        found.append(_first_from(fd, (cut, at[1]), (hi, end[1]), (here + 1) * width, minutes))
    near = [x for x in found if x is not None and prev < x < after_cut]
    return min(near, key=lambda x: abs(x - cut)) if near else cut


def _window_parts(parts: list[Any], width: int) -> Iterator[Any]:
    """A file's parts (``FileSource.split``: contiguous ``ReadTask`` ranges) cut where windows end
    (``window_cuts``, lazily); other tasks as they are."""
    path = getattr(parts[0], "path", None) if parts else None
    if len(parts) < 2 or not isinstance(path, str) or getattr(parts[0], "compressed", True) \
            or not all(is_dataclass(p) and getattr(p, "path", None) == path for p in parts) \
            or any(a.end != b.start for a, b in itertools.pairwise(parts)):
        yield from parts
        return
    cuts = window_cuts(path, [p.start for p in parts] + [parts[-1].end], width)
    start = next(cuts)
    for p, end in zip(parts, cuts, strict=False):
        yield replace(p, start=start, end=end)
        start = end


def tune_malloc() -> bool:
    """Apply ``MALLOC_OPTIONS`` to this process (and so to the workers it forks afterwards) when its C
    library is glibc; a no-op elsewhere. For processes that end with the run (the CLI, the workers): memory
    freed during the run stays in the heap for reuse until the process exits. -> whether it applied."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):  # no such confstr name (not glibc), no libc symbols
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    (threshold_param, threshold), *rest = MALLOC_OPTIONS
    # Only with the threshold in place do the others follow: setting them alone would also switch off
    # glibc's dynamic mmap threshold, with the small default left fixed.
    if mallopt(threshold_param, threshold) != 1 and mallopt(threshold_param, MMAP_THRESHOLD_FALLBACK) != 1:
        return False
    return all([mallopt(param, value) == 1 for param, value in rest])


# --- worker processes ------------------------------------------------------------------------------

_W: dict[str, Any] = {}


def _init_worker(source: Any, settings: EngineSettings, progress: Any, lock_path: str | None) -> None:
    # The forked worker inherits the run lock's descriptor; dropping our copy means a killed parent's
    # lock is released at once, not when the orphaned workers finish their part.
    if lock_path:
        _close_fds_to(lock_path)
    # A worker only decodes parts and sends them back: with the cyclic GC on, pickling a part's trace parts
    # and aggregates (hundreds of thousands of tuples, dicts and lists) cost more than decoding it. Nothing
    # a worker builds forms cycles that need collecting.
    gc.disable()
    tune_malloc()
    _W.update(source=source, settings=settings, progress=progress)


def _close_fds_to(path: str) -> None:
    target = os.path.realpath(path)
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in fds:
        try:
            if os.readlink(f"/proc/self/fd/{name}") == target:
                os.close(int(name))
        except OSError:
            continue


def _work(job: tuple[int, int, Any]) -> PartResult:
    task_index, part_index, task = job
    out = process_part(_W["source"], task, _W["settings"], task_index, part_index, _W["progress"])
    # sent to the parent as columns: pickled without an object per aggregate, merged by columns
    out.aggregates = AggregateColumns.of(out.aggregates)
    return out


def task_size(task: Any) -> int | None:
    for attr in ("length", "size", "remaining"):
        v = getattr(task, attr, None)
        if isinstance(v, int):
            return v
    start, end = getattr(task, "start", None), getattr(task, "end", None)
    if isinstance(start, int) and isinstance(end, int):
        return end - start
    return None


class _Pool(Pool):
    """``multiprocessing.pool.Pool`` whose worker-handler thread does not wake on results.

    The stock pool's handler thread waits on the result pipe among its sentinels, so while a part's result
    (megabytes of window and trace columns) sits in the pipe and the result thread reads it, the handler
    wakes, finds nothing to do and waits again, in a busy loop that takes the GIL from the parent's real work
    (measured: about 0.1 us of the parent's CPU per event, a seventh of its share). Without the pipe it
    still wakes for what it is there for: a worker's exit (the workers' own sentinels) and ``close`` /
    ``terminate`` (the change notifier). ``close`` is called here once the last part is sent; the handler
    then waits for the results still out, and the pool's cache wakes it through the change notifier when
    the last one is in (it notifies when it empties), to stop the workers."""

    def _get_sentinels(self) -> list[Any]:
        return [self._change_notifier._reader]  # type: ignore[attr-defined]


class LocalEngine:
    """Runs parts on a fork pool of ``settings.workers`` processes (in-process when one part or worker)."""

    def __init__(self, source: Any, settings: EngineSettings, *, lock_path: str | None = None) -> None:
        self.source = source
        self.settings = settings
        self.lock_path = lock_path
        self.progress = mp.get_context("fork").Value("q", 0)

    @property
    def bytes_done(self) -> int:
        return int(self.progress.value)

    def plan(self, tasks: Sequence[Any]) -> list[tuple[int, int, Any]]:
        """Split each task into parts of about ``part_bytes`` (compressed files stay whole), a file's parts cut
        where windows end (``window_cuts``)."""
        return list(self._plan(tasks)[1])

    def _plan(self, tasks: Sequence[Any]) -> tuple[int, Iterator[tuple[int, int, Any]]]:
        """``plan``'s number of parts, and its parts as an iterator: a part's end is moved to a window's end as
        the part is taken (the run sends its first parts before the search for the later cuts)."""
        splits: list[tuple[int, list[Any]]] = []
        for ti, task in enumerate(tasks):
            size = task_size(task)
            n = 1
            if size is not None and not getattr(task, "compressed", False) and self.settings.workers > 1:
                n = max(1, -(-size // self.settings.part_bytes))
            splits.append((ti, self.source.split(task, n) if n > 1 else [task]))
        width = self.settings.window_seconds

        def jobs() -> Iterator[tuple[int, int, Any]]:
            for ti, parts in splits:
                yield from ((ti, pi, p) for pi, p in enumerate(_window_parts(parts, width)))

        return sum(len(parts) for _, parts in splits), jobs()

    def run(self, tasks: Sequence[Any], on_wait: Callable[[], None] | None = None) -> Iterator[PartResult]:
        """Results of every part, in input order (the work starts at the first ``next``)."""
        yield from self.start(tasks, on_wait)

    def start(self, tasks: Sequence[Any],
              on_wait: Callable[[], None] | None = None) -> Generator[PartResult, None, None]:
        """``run``'s results, with the workers forked and the first parts queued before it returns, so the
        caller can do its own setup while they read. Exhaust or close the iterator: closing it ends the pool.
        (An engine that computes its parts elsewhere, overriding ``run``, starts as it is iterated.)"""
        if type(self).run is not LocalEngine.run:
            return cast(Generator[PartResult, None, None], iter(self.run(tasks, on_wait)))
        results = self._results(tasks, on_wait)
        next(results)  # up to the pool started and the first parts queued: that first yield is no result
        return cast(Generator[PartResult, None, None], results)

    def _results(self, tasks: Sequence[Any],
                 on_wait: Callable[[], None] | None) -> Generator[PartResult | None, None, None]:
        count, jobs = self._plan(tasks)
        workers = max(1, self.settings.workers)
        if workers == 1 or count <= 1:
            yield None
            for ti, pi, task in jobs:
                yield process_part(self.source, task, self.settings, ti, pi, self.progress)
                if on_wait is not None:
                    on_wait()
            return
        ctx = mp.get_context("fork")
        pool = _Pool(min(workers, count), initializer=_init_worker,
                     initargs=(self.source, self.settings, self.progress, self.lock_path), context=ctx)
        try:
            inflight: deque[AsyncResult[PartResult]] = deque()
            todo = jobs
            left = count

            def submit(job: tuple[int, int, Any]) -> None:
                nonlocal left
                inflight.append(pool.apply_async(_work, (job,)))
                left -= 1
                if not left:
                    # Nothing more to send: the workers exit as soon as the last results are in, while the
                    # caller still takes them, rather than after (the join at the end is then quick).
                    pool.close()

            limit = workers + 1  # one queued part per worker pool keeps them busy; more only holds memory
            for job in todo:
                submit(job)
                if len(inflight) >= limit:
                    break
            yield None
            while inflight:
                head = inflight[0]
                while not head.ready():
                    head.wait(0.2)
                    if on_wait is not None:
                        on_wait()
                inflight.popleft()
                result = head.get()
                nxt = next(todo, None)
                if nxt is not None:
                    submit(nxt)
                yield result
            pool.join()
        finally:
            pool.terminate()
