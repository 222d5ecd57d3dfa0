"""``FluentForwardHandler``: events straight to a Fluent Bit (or Fluentd) ``forward`` input, via fluent-logger,
with a local spool file so that an input that is down costs a delay, never an event.

    LOGGING = build_logging(filename="/var/log/app/events.log", extra_handlers={
        "fluent": {"class": "logging_apm.fluent.FluentForwardHandler", "host": "127.0.0.1", "port": 24224,
                   "tag": "app.events", "spool_path": "/var/spool/app/apm-fluent"}})

How an event travels:

1. ``emit`` (in the app's thread) only puts the event on a bounded queue; a sender thread does the rest.
   If the queue is full for a second, the event is written to the spool by the calling thread instead
   (never dropped; only then can its order relative to the queued events change).
2. The sender thread sends with ``fluent.sender.FluentSender`` (Message mode: ``[tag, EventTime, record]``),
   or in acknowledged chunks (``require_ack``, below).
   When a send fails (connection refused, reset, or the peer closed the connection, which fluent-logger
   checks before and after each write), the packet fluent-logger kept in ``pendings`` is taken from it and
   appended to the spool, and so is every later event while the spool is not empty, so the order is kept.
3. Every ``retry_interval`` seconds (and whenever new events arrive after that), the sender thread resends
   the spool from its committed offset, in order. Once all of it went out, the offset is reset to 0 and the
   file truncated. A handler that starts and finds a spool (the previous process died with a backlog)
   resends it first.

The spool: ``<spool_path>.<pid>`` holds the packets exactly as they would have been sent (a msgpack stream),
``<spool_path>.<pid>.pos`` the offset sent so far. Each file is held with ``flock`` by its process; at start,
a handler adopts the spool files of processes that are gone (their lock is free) and resends them too.

fsync policy (``fsync``): ``"interval"`` (default) flushes every append to the OS at once and fsyncs at most
once a second, so a process crash loses nothing and a machine crash at most the last second of spooled
events; ``"always"`` fsyncs every append (safest, slowest); ``"never"`` leaves it to the OS. The offset file
is replaced atomically (write, fsync, rename) after each resend pass, so a crash during resending sends
some events twice, never skips one (at least once).

Acknowledgements: fluent-logger's Message mode has none, so an event written to a socket whose peer vanished
without closing it (a host crash) can be lost in the kernel's buffer; a peer that stops or restarts closes
its connections, which is detected. With ``require_ack=True`` the handler sends PackedForward chunks (up to
500 events) with a ``chunk`` id instead and counts a chunk as sent only when the input answered
``{"ack": id}`` within ``timeout``; anything else (no answer, a closed connection) spools the chunk. That is
at least once end to end: a chunk received but not acknowledged is sent again. Fluent Bit's forward input
acknowledges since 1.5, Fluentd's always.

Counters of what happened are in ``stats`` (received, sent, spooled, resent, quarantined, errors by type),
in the manner of Vector's component counters.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import queue
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

import msgpack

from logging_apm.emit import INTERNAL_LOGGER

__all__ = ["FluentForwardHandler", "Spool"]

FsyncPolicy = Literal["always", "interval", "never"]
_SENTINEL: Final = object()
_log = logging.getLogger(INTERNAL_LOGGER)


def _packet(tag: str, epoch: float, record: Any) -> bytes:
    from fluent.sender import EventTime

    return msgpack.packb((tag, EventTime(epoch), record), default=str)  # type: ignore[no-any-return]


@dataclass
class Stats:
    received: int = 0  # events handed to the handler
    sent: int = 0  # events written to the forward input on the first try
    spooled: int = 0  # events written to the spool
    resent: int = 0  # spooled events sent later
    quarantined: int = 0  # spool bytes that could not be decoded, moved aside to <spool>.corrupt
    errors: dict[str, int] = field(default_factory=dict)  # why sends failed, by exception type


class Spool:
    """An append-only file of msgpack packets plus a committed read offset; one process owns it (flock)."""

    def __init__(self, path: Path, fsync: FsyncPolicy = "interval") -> None:
        self.path = path
        self.pos_path = path.with_name(path.name + ".pos")
        self.fsync = fsync
        self._last_sync = 0.0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] = open(path, "ab")  # noqa: SIM115 - held for the spool's life
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise
        self.pos = self._read_pos()
        self.repaired = self._repair()

    def _repair(self) -> int:
        """Quarantine a torn or corrupt tail (a crash in the middle of an append); the bytes moved."""
        end = self.pos
        try:
            for offset, _ in self.packets():
                end = offset
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            pass
        return self.quarantine_rest(end) if end < self.size() else 0

    @classmethod
    def adopt(cls, path: Path, fsync: FsyncPolicy) -> Spool | None:
        """Open someone else's spool if its owner is gone (its lock is free); ``None`` when it is held."""
        try:
            return cls(path, fsync)
        except BlockingIOError:
            return None

    def _read_pos(self) -> int:
        try:
            pos = int(self.pos_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            pos = 0
        return pos if 0 <= pos <= self.size() else 0

    def size(self) -> int:
        return os.fstat(self._fh.fileno()).st_size

    def backlog(self) -> bool:
        return self.size() > self.pos

    def append(self, data: bytes) -> None:
        self._fh.write(data)
        self._fh.flush()
        now = time.monotonic()
        if self.fsync == "always" or (self.fsync == "interval" and now - self._last_sync >= 1.0):
            os.fsync(self._fh.fileno())
            self._last_sync = now

    def sync(self) -> None:
        self._fh.flush()
        if self.fsync != "never":
            os.fsync(self._fh.fileno())

    def commit(self, pos: int) -> None:
        """Durably record that everything before ``pos`` was sent; truncate when all of it was."""
        self.sync()
        done = pos >= self.size()
        self._write_pos(0 if done else pos)
        if done:
            # Offset 0 is durable before the truncate: a crash in between resends, never skips.
            self._fh.truncate(0)
            self.sync()
        self.pos = 0 if done else pos

    def _write_pos(self, pos: int) -> None:
        tmp = self.pos_path.with_name(self.pos_path.name + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(str(pos))
            fh.flush()
            if self.fsync != "never":
                os.fsync(fh.fileno())
        os.replace(tmp, self.pos_path)

    def packets(self) -> Iterator[tuple[int, Any]]:
        """(offset after it, decoded packet) from the committed offset on; stops at a torn tail."""
        self.sync()
        with open(self.path, "rb") as fh:
            fh.seek(self.pos)
            unpacker = msgpack.Unpacker(fh, raw=False, strict_map_key=False)
            for obj in unpacker:
                yield self.pos + unpacker.tell(), obj

    def quarantine_rest(self, offset: int) -> int:
        """Move the bytes from ``offset`` on to ``<spool>.corrupt`` and drop them from the spool."""
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            rest = fh.read()
        with open(self.path.with_name(self.path.name + ".corrupt"), "ab") as out:
            out.write(rest)
        self._fh.truncate(offset)
        self.sync()
        return len(rest)

    def close(self, remove_if_empty: bool = True) -> None:
        empty = not self.backlog()
        try:
            self.sync()
        finally:
            self._fh.close()  # releases the flock
        if empty and remove_if_empty:
            for p in (self.path, self.pos_path):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


Packet = tuple[str, Any, Any]  # (tag, EventTime or ext, record)


class _MessageTransport:
    """fluent-logger's FluentSender, Message mode, one packet at a time (no acknowledgements)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        from fluent.sender import FluentSender

        # tag "" so that the label passed is the whole tag (a spooled packet's tag is re-emitted as is).
        self.sender = FluentSender("", host=host, port=port, timeout=timeout, nanosecond_precision=True)
        self.last_error: BaseException | None = None

    def send(self, packets: list[Packet]) -> int:
        """How many of ``packets`` went out, in order; stops at the first failure."""
        for i, (tag, ts, record) in enumerate(packets):
            if not self.sender.emit_with_time(tag, ts, record):
                # fluent-logger keeps a failed packet in ``pendings`` to prepend to its next send; the
                # spool keeps it instead, so the only copy is the durable, ordered one.
                self.sender.pendings = None
                self.last_error = self.sender.last_error or OSError("send failed")
                self.sender.clear_last_error()
                return i
        return len(packets)

    def forget_after_fork(self) -> None:
        self.sender.socket = None  # no shutdown: that would cut the parent's connection too
        self.sender.pendings = None

    def close(self) -> None:
        self.sender.close()


class _AckTransport:
    """PackedForward chunks with the ``chunk`` option: a chunk counts as sent once the input answered
    ``{"ack": chunk}`` (Fluent Bit's forward input does since 1.5, Fluentd's always)."""

    def __init__(self, host: str, port: int, timeout: float, chunk_events: int = 500) -> None:
        self.host, self.port, self.timeout, self.chunk_events = host, port, timeout, chunk_events
        self.sock: socket.socket | None = None
        self.last_error: BaseException | None = None

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock

    def _chunk(self, tag: str, entries: list[Packet]) -> None:
        chunk = base64.b64encode(os.urandom(16)).decode()
        body = b"".join(msgpack.packb((ts, record), default=str) for _, ts, record in entries)
        sock = self._connect()
        sock.sendall(msgpack.packb((tag, body, {"chunk": chunk, "size": len(entries)})))
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("the forward input closed the connection before acknowledging")
            unpacker.feed(data)
            for answer in unpacker:
                if isinstance(answer, dict) and answer.get("ack") == chunk:
                    return
                raise ConnectionError(f"unexpected answer to chunk {chunk}: {answer!r}")

    def send(self, packets: list[Packet]) -> int:
        done = 0
        while done < len(packets):
            tag = packets[done][0]
            end = done
            while end < len(packets) and end - done < self.chunk_events and packets[end][0] == tag:
                end += 1
            try:
                self._chunk(tag, packets[done:end])
            except (OSError, ValueError) as exc:  # socket errors, timeouts, a garbled answer
                self.last_error = exc
                self.close()
                return done
            done = end
        return done

    def forget_after_fork(self) -> None:
        self.sock = None

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


_live_handlers: weakref.WeakSet[FluentForwardHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_live_handlers):
        try:
            handler._after_fork_in_child()
        except Exception:  # a handler that cannot restart must not break the forked worker
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)


class FluentForwardHandler(logging.Handler):
    """Sends each event dict (``record.msg``) to a forward input; spools when it cannot (module docs)."""

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        tag: str | None = None,
        spool_path: str | os.PathLike[str] | None = None,
        *,
        fsync: FsyncPolicy = "interval",
        retry_interval: float = 5.0,
        timeout: float = 3.0,
        max_queue: int = 100_000,
        require_ack: bool = False,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be always, interval or never, not {fsync!r}")
        self.host = host or os.environ.get("APM_FLUENT_HOST", "127.0.0.1")
        self.port = int(port or os.environ.get("APM_FLUENT_PORT") or 24224)
        self.tag = tag or os.environ.get("APM_FLUENT_TAG", "apm.events")
        base = Path(spool_path or os.environ.get("APM_FLUENT_SPOOL", "") or
                    Path(os.environ.get("TMPDIR", "/tmp")) / "logging_apm-fluent")
        self.spool_base = base
        self.retry_interval = retry_interval
        self.fsync: FsyncPolicy = fsync
        self.stats = Stats()
        # tag "" so that the label we pass is the whole tag, and a spooled packet's tag can be re-emitted.
        self._timeout = timeout
        self._max_queue = max_queue
        self.require_ack = require_ack
        self._closed = False
        self._start_process_state()
        _live_handlers.add(self)

    def _start_process_state(self) -> None:
        """What belongs to one process: sender, queue, spool file, sender thread (rebuilt after a fork)."""
        self._transport: _MessageTransport | _AckTransport = (
            _AckTransport(self.host, self.port, self._timeout) if self.require_ack
            else _MessageTransport(self.host, self.port, self._timeout))
        self._queue: queue.Queue[Any] = queue.Queue(self._max_queue)
        self._io = threading.Lock()  # the spool and the sender belong to one thread at a time
        self._spool = Spool(Path(f"{self.spool_base}.{os.getpid()}"), self.fsync)
        self.stats.quarantined += self._spool.repaired
        self._orphans = self._find_orphans()
        self._next_retry = 0.0
        self._thread = threading.Thread(target=self._run, name="logging_apm-fluent", daemon=True)
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        # The child inherits the parent's queue contents (the parent sends those), its socket and its spool
        # file and lock. Drop the references without shutdown (a shutdown would cut the parent's
        # connection too) and start over with a spool of the child's own.
        if self._closed:
            return
        self._transport.forget_after_fork()
        self.stats = Stats()  # counters are per process
        with contextlib.suppress(Exception):
            self._spool._fh.close()  # closes the child's descriptor only; the parent keeps its lock
        for orphan in self._orphans:
            with contextlib.suppress(Exception):
                orphan._fh.close()
        self._start_process_state()

    # -- the app's side ---------------------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = record.msg if isinstance(record.msg, dict) else {"message": self.format(record)}
            data = _packet(self.tag, record.created, event)
            self.stats.received += 1
            if self._closed:
                self._spool_now(data)
                return
            try:
                self._queue.put(data, timeout=1.0)
            except queue.Full:
                self._spool_now(data)
        except Exception:
            self.handleError(record)

    def _spool_now(self, data: bytes) -> None:
        with self._io:
            self._spool.append(data)
            self.stats.spooled += 1

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued event was sent or spooled (not until the spool is empty)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _live_handlers.discard(self)
        self._queue.put(_SENTINEL)
        self._thread.join(30)
        with self._io:
            self._transport.close()
            self._spool.close()
        super().close()

    def spool_backlog(self) -> int:
        """Bytes waiting in this process's spool."""
        return max(0, self._spool.size() - self._spool.pos)

    # -- the sender thread ------------------------------------------------------------------------------

    def _find_orphans(self) -> list[Spool]:
        found: list[Spool] = []
        parent = self.spool_base.parent
        prefix = self.spool_base.name + "."
        if not parent.is_dir():
            return found
        for p in sorted(parent.iterdir()):
            rest = p.name[len(prefix):] if p.name.startswith(prefix) else ""
            if rest.isdigit() and p != self._spool.path:
                spool = Spool.adopt(p, self.fsync)
                if spool is not None:
                    self.stats.quarantined += spool.repaired
                    found.append(spool)
        return found

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.retry_interval)
            except queue.Empty:
                item = None
            batch = [] if item is None else [item]
            while len(batch) < 1000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(b is _SENTINEL for b in batch)
            packets = [b for b in batch if b is not _SENTINEL]
            try:
                with self._io:
                    self._resend_if_due(force=stop)
                    self._send(packets)
            except Exception as exc:  # the thread must survive anything: spool what we hold
                self._count_error(exc)
                with self._io:
                    for data in packets:
                        self._spool.append(data)
                        self.stats.spooled += 1
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                return

    def _count_error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        first = name not in self.stats.errors
        self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
        if first:
            _log.warning("logging_apm fluent forward %s:%s failed (%s: %s); spooling to %s and retrying "
                         "every %.0fs", self.host, self.port, name, exc, self._spool.path, self.retry_interval)

    def _send(self, packets: list[bytes]) -> None:
        sent = 0
        if not (self._orphans or self._spool.backlog()):
            sent = self._transmit([msgpack.unpackb(p, raw=False, strict_map_key=False) for p in packets])
            self.stats.sent += sent
        for data in packets[sent:]:
            self._spool.append(data)
            self.stats.spooled += 1

    def _transmit(self, packets: list[Packet]) -> int:
        """Send in order; on a failure count it and schedule the next attempt. How many went out."""
        sent = self._transport.send(packets)
        if sent < len(packets):
            self._count_error(self._transport.last_error or OSError("send failed"))
            self._next_retry = time.monotonic() + self.retry_interval
        return sent

    def _resend_if_due(self, force: bool = False) -> None:
        if not (self._orphans or self._spool.backlog()):
            return
        if not force and time.monotonic() < self._next_retry:
            return
        while self._orphans:
            if not self._resend(self._orphans[0]):
                return
            self._orphans.pop(0).close()
        self._resend(self._spool)

    def _resend(self, spool: Spool) -> bool:
        """Send ``spool`` from its offset in order, in batches; True when all of it went out."""
        pos = spool.pos
        batch: list[Packet] = []
        ends: list[int] = []
        try:
            for end, packet in spool.packets():
                if not (isinstance(packet, list | tuple) and len(packet) == 3 and isinstance(packet[0], str)):
                    raise ValueError("not a [tag, time, record] packet")
                batch.append((packet[0], packet[1], packet[2]))
                ends.append(end)
                if len(batch) >= 500:
                    pos, ok = self._resend_batch(spool, batch, ends, pos)
                    if not ok:
                        return False
                    batch, ends = [], []
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            if batch:  # send what came before the damage first
                pos, ok = self._resend_batch(spool, batch, ends, pos)
                if not ok:
                    return False
            moved = spool.quarantine_rest(pos)
            spool.commit(pos)
            self.stats.quarantined += moved
            _log.error("logging_apm fluent spool %s: %d undecodable bytes moved to %s.corrupt (%s)",
                       spool.path, moved, spool.path.name, exc)
            return True
        if batch:
            pos, ok = self._resend_batch(spool, batch, ends, pos)
            if not ok:
                return False
        spool.commit(pos)
        return not spool.backlog()

    def _resend_batch(self, spool: Spool, batch: list[Packet], ends: list[int], pos: int) -> tuple[int, bool]:
        sent = self._transmit(batch)
        self.stats.resent += sent
        if sent:
            pos = ends[sent - 1]
        spool.commit(pos)  # durable after every batch: a crash resends at most one batch
        return pos, sent == len(batch)
