"""Trace context: the W3C traceparent conformance cases, and how spans nest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from logging_apm import tracing


def _cases(shared: Path) -> list[dict[str, Any]]:
    return json.loads((shared / "conformance" / "traceparent" / "traceparent_cases.json").read_text())


def test_every_conformance_case(shared_dir: Path) -> None:
    """parse_traceparent accepts and rejects exactly as every case of ../shared/conformance/traceparent says."""
    cases = _cases(shared_dir)
    assert len(cases) > 20
    wrong = []
    for case in cases:
        parsed = tracing.parse_traceparent(case["traceparent"])
        if (parsed is not None) != (case["expect"] == "accept"):
            wrong.append((case["from"], case["traceparent"], case["expect"]))
        if parsed is not None:
            assert parsed.trace_id == case["traceparent"].strip(" \t")[3:35]
    assert not wrong, wrong


@pytest.mark.parametrize("value", [
    "00-12345678901234567890123456789012-1234567890123456-01\n",
    "00-ABCDEF78901234567890123456789012-1234567890123456-01",
    "00-12345678901234567890123456789012-0000000000000000-01",
    "x" * 600,
    b"\xff\xfe",
    None,
    "",
])
def test_more_rejections(value: str | bytes | None) -> None:
    """Trailing newline, uppercase hex, zero span id, oversize, undecodable bytes, empty: all ignored."""
    assert tracing.parse_traceparent(value) is None


def test_sampled_flag_and_bytes() -> None:
    """The sampled bit is read from the flags; a bytes header is accepted."""
    ctx = tracing.parse_traceparent(b"00-12345678901234567890123456789012-1234567890123456-00")
    assert ctx is not None and ctx.sampled is False
    assert ctx.traceparent == "00-12345678901234567890123456789012-1234567890123456-00"


def test_spans_nest_and_restore() -> None:
    """start_span opens a child of the current span and restores the previous one after the block."""
    assert tracing.current() is None
    with tracing.start_span() as root:
        assert root.parent_span_id is None and tracing.current() is root
        with tracing.start_span() as child:
            assert child.trace_id == root.trace_id and child.parent_span_id == root.span_id
        assert tracing.current() is root
    assert tracing.current() is None


def test_ids_are_lowercase_hex_of_the_right_length() -> None:
    """Generated ids are W3C-valid (a round trip through the parser accepts them)."""
    for _ in range(200):
        ctx = tracing.TraceContext(tracing.new_trace_id(), tracing.new_span_id())
        assert tracing.parse_traceparent(ctx.traceparent) == ctx


def test_new_roots_are_valid_distinct_and_never_all_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """Roots are drawn in batches: each is a valid W3C root, none repeats, and an all-zero id (one time in
    2**58 per batch) is left out rather than used."""
    roots = [tracing.new_root() for _ in range(1000)]
    assert all(tracing.parse_traceparent(r.traceparent) == r and r.parent_span_id is None for r in roots)
    assert len({r.trace_id for r in roots}) == len({r.span_id for r in roots}) == 1000

    def draws(size: int) -> bytes:  # trace ids: zero, ff.., ff.., ff..; span ids: ..01, zero, zero, ..01
        assert size == 24 * 4
        return bytes(16) + b"\xff" * 48 + bytes(7) + b"\x01" + bytes(16) + bytes(7) + b"\x01"

    monkeypatch.setattr(tracing, "_urandom", draws)
    kept = tracing._draw_roots(4)
    assert [(r.trace_id, r.span_id) for r in kept] == [("f" * 32, "0" * 15 + "1")]


def test_native_roots_are_the_python_roots() -> None:
    """The C extension's roots() (what _draw_roots uses when it is built) makes the list _roots_of makes from
    the same random bytes: same ids, same type and values, same roots left out for an all-zero id (batches
    of 1 to 70 roots, a zero trace id or span id planted in some)."""
    import random

    from logging_apm._native import speedups

    if speedups is None:
        pytest.skip("logging_apm._speedups is not built (or LOGAPM_NATIVE=0)")
    draw = random.Random(7)
    for count in [*range(1, 71), *[64] * 200]:
        raw = bytearray(draw.randbytes(24 * count))
        for _ in range(draw.choice((0, 0, 1, 3))):  # zero ids: a trace id, or a span id
            i = draw.randrange(count)
            if draw.random() < 0.5:
                raw[16 * i:16 * i + 16] = bytes(16)
            else:
                raw[16 * count + 8 * i:16 * count + 8 * i + 8] = bytes(8)
        native, python = speedups.roots(bytes(raw), tracing.TraceContext), tracing._roots_of(bytes(raw))
        assert native == python
        assert all(type(r) is tracing.TraceContext and type(r.trace_id) is str for r in native)
        assert [r.sampled for r in native] == [True] * len(python)


def test_a_forked_child_does_not_reuse_its_parents_roots() -> None:
    """The batch of drawn roots is emptied in a forked child (the random module re-seeds there too)."""
    import os

    # Filled here, not by new_root(): that pops, and empties the batch when it takes its last root (which
    # depends on how many roots the tests before this one drew).
    tracing._roots.extend(tracing._draw_roots(4))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, str(len(tracing._roots)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"0"
    assert tracing._roots  # the parent keeps its own
