"""The fluent-logger forward handler against a local receiver of the forward protocol: delivery, spooling
while the receiver is down, resending in order when it is back, adoption of a dead process's spool."""

from __future__ import annotations

import gzip
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest
from _b_forward_receiver import ForwardReceiver
from fluent.sender import EventTime

from logging_apm.emit import EVENT_LOGGER
from logging_apm.fluent import FluentForwardHandler

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def receiver() -> Iterator[ForwardReceiver]:
    r = ForwardReceiver().start()
    yield r
    r.stop()


def _record(i: int) -> logging.LogRecord:
    event = {"apm.schema": 1, "apm.kind": "metric", "timestamp": "2026-11-29T10:00:00.000Z",
             "metric.name": "n", "metric.type": "count", "metric.value": i}
    return logging.LogRecord(EVENT_LOGGER, logging.INFO, __file__, 1, event, None, None)


def _handler(port: int, tmp_path: Path, **kw: object) -> FluentForwardHandler:
    return FluentForwardHandler("127.0.0.1", port, "app.events", tmp_path / "spool" / "apm",
                                retry_interval=0.2, timeout=2.0, **kw)  # type: ignore[arg-type]


def test_receiver_decodes_every_forward_mode_and_acks(receiver: ForwardReceiver) -> None:
    """The test receiver itself: Message, Forward, PackedForward and CompressedPackedForward are decoded
    (integer and EventTime times), and a chunk option is acknowledged."""
    t = EventTime(1_700_000_000.25)
    packed = b"".join(msgpack.packb([t, {"i": i}]) for i in (3, 4))
    with socket.create_connection(("127.0.0.1", receiver.port)) as s:
        s.sendall(msgpack.packb(["a", 1_700_000_000, {"i": 0}]))
        s.sendall(msgpack.packb(["a", [[t, {"i": 1}], [t, {"i": 2}]]]))
        s.sendall(msgpack.packb(["a", packed, {"chunk": "c1"}]))
        assert msgpack.unpackb(s.recv(100)) == {"ack": "c1"}
        s.sendall(msgpack.packb(["a", gzip.compress(msgpack.packb([t, {"i": 5}])), {"compressed": "gzip"}]))
        _wait(lambda: len(receiver.received) == 6)
    assert [r["i"] for r in receiver.records()] == [0, 1, 2, 3, 4, 5]
    assert receiver.modes == ["Message", "Forward", "PackedForward", "CompressedPackedForward"]
    assert receiver.received[1][1] == 1_700_000_000.25
    assert not receiver.errors


def test_events_are_sent_in_message_mode(receiver: ForwardReceiver, tmp_path: Path) -> None:
    """With the input up, every event arrives once, in order, under the tag, in fluent-logger's Message
    mode with a nanosecond EventTime; nothing is spooled and the spool files are removed at close."""
    h = _handler(receiver.port, tmp_path)
    try:
        for i in range(200):
            h.handle(_record(i))
        _wait(lambda: len(receiver.received) == 200)
    finally:
        h.close()
    assert [r["metric.value"] for r in receiver.records()] == list(range(200))
    assert {tag for tag, _, _ in receiver.received} == {"app.events"}
    assert set(receiver.modes) == {"Message"}
    assert h.stats.sent == 200 and h.stats.spooled == 0
    assert list((tmp_path / "spool").iterdir()) == []


def test_input_down_then_up_spools_and_resends_in_order(tmp_path: Path) -> None:
    """While nothing listens, events go to the spool file (counted, the first failure logged once); when the
    input comes up, the spool is resent in order before newer events, then emptied."""
    port = _free_port()
    h = _handler(port, tmp_path)
    receiver = None
    try:
        for i in range(50):
            h.handle(_record(i))
        h.flush()
        assert h.stats.spooled == 50 and h.spool_backlog() > 0
        assert h.stats.errors.get("ConnectionRefusedError", 0) >= 1
        receiver = ForwardReceiver(port=port).start()
        for i in range(50, 60):
            h.handle(_record(i))
        _wait(lambda: len(receiver.received) == 60)  # type: ignore[union-attr]
        _wait(lambda: h.spool_backlog() == 0)
    finally:
        h.close()
        if receiver is not None:
            receiver.stop()
    assert [r["metric.value"] for r in receiver.records()] == list(range(60))
    assert h.stats.resent >= 50


def test_receiver_goes_away_and_comes_back(receiver: ForwardReceiver, tmp_path: Path) -> None:
    """The input stops (closing its connections, like a Fluent Bit restart) in the middle of a stream and
    comes back on the same port: every event arrives, in order, none twice."""
    h = _handler(receiver.port, tmp_path)
    try:
        for i in range(100):
            h.handle(_record(i))
        _wait(lambda: len(receiver.received) == 100)
        receiver.stop()
        for i in range(100, 200):
            h.handle(_record(i))
            if i % 20 == 0:
                time.sleep(0.05)
        h.flush()
        assert h.stats.spooled > 0
        receiver.start()
        for i in range(200, 250):
            h.handle(_record(i))
        _wait(lambda: len(receiver.received) >= 250)
        _wait(lambda: h.spool_backlog() == 0)
        time.sleep(0.3)
    finally:
        h.close()
    assert [r["metric.value"] for r in receiver.records()] == list(range(250))


def test_spool_of_a_killed_process_is_adopted_and_resent(tmp_path: Path) -> None:
    """A process that spooled events (input down) and was killed leaves its spool; the next handler with the
    same spool path adopts it (the dead owner's lock is free) and resends it when the input is up."""
    port = _free_port()
    script = (
        "import sys, logging, time\n"
        f"sys.path[:0] = [{str(HERE)!r}]\n"
        "from logging_apm.fluent import FluentForwardHandler\n"
        "from test_fluent import _record\n"
        f"h = FluentForwardHandler('127.0.0.1', {port}, 'app.events', {str(tmp_path / 'spool' / 'apm')!r},"
        " retry_interval=60, fsync='always')\n"
        "for i in range(30): h.handle(_record(i))\n"
        "h.flush(); print(h.stats.spooled, flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "30"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    orphan = tmp_path / "spool" / f"apm.{proc.pid}"
    assert orphan.stat().st_size > 0

    receiver = ForwardReceiver(port=port).start()
    h = _handler(port, tmp_path)
    try:
        h.handle(_record(99))
        _wait(lambda: len(receiver.received) == 31)
    finally:
        h.close()
        receiver.stop()
    assert [r["metric.value"] for r in receiver.records()] == [*range(30), 99]
    assert not orphan.exists()


def test_torn_spool_tail_is_quarantined_not_sent(tmp_path: Path, receiver: ForwardReceiver) -> None:
    """A spool left with a half-written packet (a crash mid-append) is repaired at adoption: the complete
    packets are resent, the torn bytes moved to <spool>.corrupt and counted."""
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    good = b"".join(msgpack.packb(["app.events", EventTime(1.0), {"i": i}]) for i in range(3))
    torn = msgpack.packb(["app.events", EventTime(1.0), {"i": 3, "pad": "x" * 50}])[:-10]
    (spool_dir / "apm.999999999").write_bytes(good + torn)  # no such pid: its lock is free
    h = _handler(receiver.port, tmp_path)
    try:
        _wait(lambda: len(receiver.received) == 3)
    finally:
        h.close()
    assert [r["i"] for r in receiver.records()] == [0, 1, 2]
    assert h.stats.quarantined == len(torn)
    assert (spool_dir / "apm.999999999.corrupt").read_bytes() == torn


def test_configured_through_build_logging_extra_handlers(receiver: ForwardReceiver, tmp_path: Path) -> None:
    """The handler plugs into engineer A's build_logging by dotted path: events emitted by the app reach both
    the JSON log file and the forward input."""
    from _b_logging import events_logging

    from logging_apm.logging_config import build_logging
    from logging_apm.testing import capture_events

    log_file = tmp_path / "events.log"
    config = build_logging(filename=log_file, stdout=False, extra_handlers={"fluent": {
        "class": "logging_apm.fluent.FluentForwardHandler", "host": "127.0.0.1", "port": receiver.port,
        "tag": "app.events", "spool_path": str(tmp_path / "spool" / "apm"), "retry_interval": 0.2}})
    from logging_apm import metrics

    with events_logging(config) as handlers, capture_events():
        assert [type(h).__name__ for h in handlers] == ["BackgroundHandler", "FluentForwardHandler"]
        for i in range(5):
            metrics.count("signups", i + 1, plan="free")
        _wait(lambda: len(receiver.received) == 5)
    assert [r["metric.value"] for r in receiver.records()] == [1, 2, 3, 4, 5]
    _wait(lambda: log_file.exists() and len(log_file.read_text().splitlines()) == 5)


def test_forked_child_sends_through_its_own_sender_and_spool(receiver: ForwardReceiver, tmp_path: Path) -> None:
    """After a fork (a prefork Celery or gunicorn worker), the child gets its own sender thread, connection
    and spool file: its events arrive, and the parent's connection keeps working."""
    h = _handler(receiver.port, tmp_path)
    try:
        h.handle(_record(0))
        _wait(lambda: len(receiver.received) == 1)
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                for i in range(100, 110):
                    h.handle(_record(i))
                h.flush()
                h.close()
                code = 0 if h.stats.sent == 10 else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        h.handle(_record(1))
        _wait(lambda: len(receiver.received) == 12)
    finally:
        h.close()
    values = [r["metric.value"] for r in receiver.records()]
    assert values[0] == 0 and sorted(values[1:]) == [1, *range(100, 110)]
    assert h.stats.spooled == 0
    assert not any(p.name.endswith(str(pid)) for p in (tmp_path / "spool").iterdir())


def test_require_ack_sends_packed_forward_chunks(receiver: ForwardReceiver, tmp_path: Path) -> None:
    """With require_ack, events go as PackedForward chunks with a chunk id, and count as sent once acked."""
    h = _handler(receiver.port, tmp_path, require_ack=True)
    try:
        for i in range(300):
            h.handle(_record(i))
        _wait(lambda: len(receiver.received) == 300)
        h.flush()
    finally:
        h.close()
    assert [r["metric.value"] for r in receiver.records()] == list(range(300))
    assert set(receiver.modes) == {"PackedForward"}
    assert h.stats.sent == 300 and h.stats.spooled == 0


def test_unacknowledged_chunks_are_spooled_and_resent(tmp_path: Path) -> None:
    """A forward input that takes chunks but never acknowledges them does not count as delivery: the events
    are spooled (after the ack timeout) and resent once acks come back. Every event arrives, in order of
    first arrival; the only repeats are chunks that were never acknowledged (at least once)."""
    receiver = ForwardReceiver(answer_acks=False).start()
    h = FluentForwardHandler("127.0.0.1", receiver.port, "app.events", tmp_path / "spool" / "apm",
                             retry_interval=0.2, timeout=0.5, require_ack=True)
    try:
        for i in range(20):
            h.handle(_record(i))
        h.flush()
        assert h.stats.sent == 0 and h.stats.spooled == 20
        assert h.stats.errors.get("TimeoutError", 0) + h.stats.errors.get("timeout", 0) >= 1
        unacked = len(receiver.received)
        receiver.answer_acks = True
        for i in range(20, 25):
            h.handle(_record(i))
        _wait(lambda: h.spool_backlog() == 0 and len(receiver.received) >= unacked + 25)
    finally:
        h.close()
        receiver.stop()
    values = [r["metric.value"] for r in receiver.records()]
    first_seen = list(dict.fromkeys(values))
    assert first_seen == list(range(25))
    assert values[unacked:] == list(range(25))  # after acks resumed: everything once, in order
