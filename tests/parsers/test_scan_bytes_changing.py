"""The native scanner reading bytes that change while it reads them.

A mapped file's chunk (``FileSource.read_mapped``, ``aggregator/_filemap.c``) is read in place: when the file
is cut and written again (copytruncate while the app appends), the scanner's passes can see other bytes than
its checks saw. The part is thrown away and read again when the cut is seen (engine.process_part), but the
scan itself must still end well: None or a result whose tables read as str, never a read past the block (the
checks it made are no longer true: the line ends the prepass found may be gone). Here a forked child flips
bytes of a shared mapping while the parent scans it; the block ends at a page that cannot be read, so that a
read past it is a crash. The flips are timing-dependent: the id tests failed without their fix in every run
(UnicodeDecodeError reading the table in 0.4-1.5% of the scans), and can never fail with it.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from parsers import scan

pytestmark = pytest.mark.skipif(not scan.available, reason="parsers._scan not built, or LOGAPM_NATIVE=0")

PAGE = mmap.PAGESIZE
ROUNDS = 1500


def _block(seed: int) -> bytes:
    """3,000 events: requests with non-ASCII service names and routes, metrics with non-ASCII tag values."""
    rng = random.Random(seed)
    t0 = time.time() - 600
    lines = []
    for i in range(3000):
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + i * 0.1)) + ".123Z"
        span = f"{rng.getrandbits(64):016x}"
        if i % 3 == 2:
            ev: dict[str, object] = {"timestamp": ts, "apm.schema": 1, "apm.kind": "metric", "metric.name": "m.x",
                                     "metric.type": "count", "metric.value": 1, "metric.tags": {"k": "v\u00e9\u00e9"},
                                     "span_id": span}
        else:
            ev = {"timestamp": ts, "apm.schema": 1, "apm.kind": "request", "duration_ms": 1.5, "outcome": "success",
                  "service.name": f"s\u00e9rvice{i % 7}", "span_id": span,
                  "trace_id": f"{rng.getrandbits(128):032x}", "http.request.method": "GET",
                  "http.route": f"api/\u00e9t\u00e9/{i % 50}/", "http.response.status_code": 200}
        lines.append(json.dumps(ev, ensure_ascii=False, separators=(",", ":")).encode())
    return b"\n".join(lines) + b"\n"


@contextmanager
def _flipping(block: bytes, flips: list[tuple[int, int]]) -> Iterator[memoryview]:
    """A view of ``block`` in a shared mapping that ends at a PROT_NONE page, while a forked child turns each
    byte at ``flips``' offsets into the other value and back, as fast as it can."""
    pages = -(-len(block) // PAGE)
    mm = mmap.mmap(-1, (pages + 1) * PAGE)  # MAP_SHARED | MAP_ANONYMOUS: the child's writes are seen here
    address = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(address + pages * PAGE), PAGE, 0) == 0, os.strerror(ctypes.get_errno())
    start = pages * PAGE - len(block)
    mm[start: start + len(block)] = block
    toggles = [(start + at, block[at], other) for at, other in flips]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            while True:
                for at, a, b in toggles:
                    mm[at] = b if mm[at] == a else a
        finally:
            os._exit(0)
    view = memoryview(mm)[start: pages * PAGE]
    try:
        yield view
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        view.release()
        mm.close()


def _scans(view: memoryview, rounds: int = ROUNDS) -> dict[str, int]:
    """Scans of the view (``scan.scan_range``, as ``LineParser.parse_columns`` makes them), each result's
    tables read whole (the lazy span ids' str made): the count of results, of give-ups (None) and of each
    exception raised."""
    seen: dict[str, int] = {}
    for _ in range(rounds):
        try:
            got = scan.scan_range(view, 0.0, 1e12, 1 << 20)
            if got is not None:
                for table in got[2].tables.values():
                    list(table)
                    if hasattr(table, "join"):  # a _scan.Strings
                        table.join("\0")
            kind = "result" if got is not None else "none"
        except Exception as e:  # counted: the test says which
            kind = type(e).__name__
        seen[kind] = seen.get(kind, 0) + 1
    return seen


@pytest.mark.parametrize("key", ["span_id", "trace_id"])
def test_an_id_changed_after_it_was_scanned(key: str) -> None:
    """A span or trace id's byte turned into a UTF-8 lead byte between the scan's look at it and the copy of
    the lazy table's bytes (made at the block's end): the table is never one whose str cannot be made (nor its
    join, which a worker's batch makes when pickled)."""
    block = _block(1)
    opening = f'"{key}":"'.encode()
    at = [i for i in range(len(block)) if block.startswith(opening, i)][1500] + len(opening)
    with _flipping(block, [(at, 0xC3)]) as view:
        seen = _scans(view)
    assert set(seen) <= {"result", "none"}, seen


def test_a_value_changed_after_its_block_was_checked() -> None:
    """A continuation byte of a route turned into an ASCII letter after the block's UTF-8 check (a segment
    ahead of the parse): the C scan raises UnicodeDecodeError for the value that no longer decodes, and
    ``scan_range`` gives the block up (None), as for any exception of the C scan."""
    block = _block(2)
    route = [i for i in range(len(block)) if block.startswith(b'"http.route":"api/', i)][1000] + 19
    assert block[route] == 0xA9  # the continuation byte of "\u00e9" (api/\u00e9t\u00e9/...)
    with _flipping(block, [(route, ord("X"))]) as view:
        seen = _scans(view, 500)
    assert set(seen) <= {"result", "none"}, seen


def test_line_ends_and_quotes_changed_while_read() -> None:
    """The prepass's line ends and the strings' quotes turned into other bytes and back while read: the
    parse's sentinels are gone from some lines, and every read still stays in the block (a read past it is a
    crash: the page after it is PROT_NONE)."""
    block = _block(3)
    rng = random.Random(3)
    flips = [(i, ord(" ")) for i in range(len(block) - 1) if block[i] == 0x0A and rng.random() < 0.05]
    flips += [(i, ord("a")) for i in range(len(block)) if block[i] == 0x22 and rng.random() < 0.01]
    with _flipping(block, flips) as view:
        seen = _scans(view, 500)
    assert set(seen) <= {"result", "none"}, seen
