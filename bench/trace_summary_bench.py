"""The workers' trace summary on a log's columns: ``columns.extract_columns`` per chunk and
``columns.request_sums`` per part (what ``traces.finish_part`` adds), this tree against a git revision.

    python bench/trace_summary_bench.py --log /tmp/lb/300k.log [--against main] [--repeat 9] [--profile]
        [--old-native none|PATH] [--fresh]

The log is read in the engine's chunks (``CHUNK_BYTES``) and parsed once, outside the timing, with
``LineParser.parse_columns`` (the native scanner's columns, as a worker has them); every round then runs each
path over all the chunks' columns and each part's batches (``PART_BYTES`` of chunks), the paths taking turns
going first. CPU time (``time.process_time``) per event, medians of the rounds, and the median of the rounds'
ratios; every chunk's batch (``TraceBatch.differences``) and every part's ``RequestSums`` are checked to be
the same values from both paths. With ``--profile``: cProfile of this tree's path over one round instead.
With ``--fresh``: each path's every chunk parsed again just before its summary (outside the timing), so that
the columns and their strings are in the cache as a worker has them, not read back from memory.

The revision's ``columns.py`` imports the C extension this tree built (``aggregator.insights._summary``), if it
uses one; ``--old-native PATH`` gives it another build of the extension (a ``.so`` file, e.g. from another
worktree), ``--old-native none`` none (its numpy path).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

from aggregator.engine import CHUNK_BYTES, PART_BYTES
from aggregator.insights import columns
from parsers import LineParser


def module_at(rev: str) -> Any:
    """``aggregator/insights/columns.py`` as it was at git revision ``rev`` (its own ``TraceBatch``)."""
    root = Path(__file__).resolve().parent.parent
    src = subprocess.run(["git", "show", f"{rev}:aggregator/insights/columns.py"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    module = types.ModuleType(f"columns_at_{rev}")
    module.__dict__["__name__"] = module.__name__
    sys.modules[module.__name__] = module  # (dataclasses and pickling look their module up)
    exec(compile(src, f"aggregator/insights/columns.py@{rev}", "exec"), module.__dict__)
    return module


def native_at(path: str) -> Any:
    """The C extension built at ``path`` (``aggregator/insights/_summary*.so`` of another tree), as a module
    of its own beside this tree's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("old_native._summary", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Chunks:
    """The log's chunks, grouped per part: their columns pieces parsed once (``parts``), or parsed again on each
    call of ``fresh``."""

    def __init__(self, path: str, limit: int) -> None:
        self.path = path
        self.data = Path(path).read_bytes()[:limit] if limit else Path(path).read_bytes()
        self.parser = LineParser(now=time.time() + 86_400)
        self.ranges: list[list[tuple[int, int]]] = [[]]
        pos = done = 0
        while pos < len(self.data):
            end = self.data.find(b"\n", min(pos + CHUNK_BYTES, len(self.data) - 1)) + 1 or len(self.data)
            self.ranges[-1].append((pos, end))
            done += end - pos
            pos = end
            if done >= PART_BYTES and pos < len(self.data):
                self.ranges.append([])
                done = 0
        self.parts = [[c for pos, end in part for c in self.columns(pos, end, True)] for part in self.ranges]
        self.n = sum(c.n for part in self.parts for c in part)

    def columns(self, pos: int, end: int, say: bool = False) -> list[Any]:
        out = []
        for res in self.parser.parse_columns(self.data[pos:end], self.path, pos):
            if res.columns is not None and res.columns.n:
                out.append(res.columns)
            elif res.events and say:  # (the log's cut last line: the scanner leaves a block without its newline)
                print(f"left out: {len(res.events)} events parsed as objects at offset {pos}", file=sys.stderr)
        return out

    def fresh(self) -> Any:
        """Per part, an iterator of its columns pieces, each chunk parsed when it is reached."""
        for part in self.ranges:
            yield (c for pos, end in part for c in self.columns(pos, end))


def load(path: str, limit: int) -> tuple[list[list[Any]], int]:
    """The log's chunks' columns pieces, grouped per part, and the number of events."""
    chunks = Chunks(path, limit)
    return chunks.parts, chunks.n


def run(module: Any, parts: Any, width: int, spent: list[float] | None = None) -> tuple[list[Any], list[Any]]:
    """Each part's batches and sums; the CPU time of the summaries alone added to ``spent[0]``."""
    batches, sums = [], []
    cpu = 0.0
    for part in parts:
        got = []
        for cols in part:
            t = time.process_time()
            got.extend(module.extract_columns(cols))
            cpu += time.process_time() - t
        batches.extend(got)
        t = time.process_time()
        if any(b.requests for b in got):
            sums.append(module.request_sums(got, width))
        cpu += time.process_time() - t
    if spent is not None:
        spent[0] += cpu
    return batches, sums


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", default="/tmp/lb/300k.log")
    ap.add_argument("--limit", type=int, default=0, help="only the log's first LIMIT bytes")
    ap.add_argument("--against", default="main")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--width", type=int, default=60)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--old-native", help="the revision's C extension: none, or the path of its build")
    ap.add_argument("--fresh", action="store_true", help="each chunk parsed again just before its summary")
    args = ap.parse_args()
    chunks = Chunks(args.log, args.limit)
    parts, n = chunks.parts, chunks.n
    gc.disable()  # as in the engine's workers
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(run, columns, parts, args.width)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    old = module_at(args.against)
    if args.old_native:
        old._native = None if args.old_native == "none" else native_at(args.old_native)
    paths = {f"@{args.against}": old, "this tree": columns}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(args.repeat):
        got = {}
        for name in (list(paths) if r % 2 else list(paths)[::-1]):
            spent = [0.0]
            got[name] = run(paths[name], chunks.fresh() if args.fresh else parts, args.width, spent)
            cpu[name].append(spent[0])
        (ob, osums), (nb, nsums) = got.values()
        if len(ob) != len(nb) or len(osums) != len(nsums):
            raise SystemExit("the paths give different numbers of batches or sums")
        for i, (a, b) in enumerate(zip(ob, nb, strict=True)):
            if diff := b.differences(a):
                raise SystemExit(f"batch {i}: differs in {diff}")
        for i, (a, b) in enumerate(zip(osums, nsums, strict=True)):
            if repr(sorted(a.groups, key=repr)) != repr(sorted(b.groups, key=repr)):
                raise SystemExit(f"part {i}: the RequestSums differ")
        gc.collect()
    chunks = sum(map(len, parts))
    print(f"{args.log}: {n} events, {chunks} columns pieces in {len(parts)} parts; the same batches and sums; "
          f"CPU us/event, medians (min) of {args.repeat} interleaved rounds"
          f"{' (each chunk parsed just before)' if args.fresh else ''}")
    for name in paths:
        print(f"{name:<16}{statistics.median(cpu[name]) / n * 1e6:>8.4f}  ({min(cpu[name]) / n * 1e6:.4f})")
    names = list(paths)
    ratio = statistics.median(a / b for a, b in zip(cpu[names[0]], cpu[names[1]], strict=True))
    print(f"{'old / new':<16}{ratio:>8.3f}  (median of the rounds' ratios)")


if __name__ == "__main__":
    main()
