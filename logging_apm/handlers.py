"""A handler that never makes the logging thread wait on disk: a queue, and a listener thread that writes.

Python 3.11's ``dictConfig`` has no ``listener`` key for ``QueueHandler`` (3.12 added it), and the stdlib
``QueueHandler`` formats in the calling thread. ``BackgroundHandler`` is both halves in one class that
``LOGGING`` can name: ``emit`` only puts the record on a ``SimpleQueue``; a daemon thread drains the queue in
batches, formats each record (``format_bytes`` when the formatter offers it; a queued event by
``format_request``, ``format_pending`` or ``format_event`` when it offers them), and writes the batch with one
``write`` to a file or a stream.

Files follow ``WatchedFileHandler`` semantics so that logrotate's default move-and-create works: before each
batch the path is stat'ed and the file re-opened when its device/inode changed or it vanished. Writes use an
unbuffered descriptor opened with ``O_APPEND``, so several processes (gunicorn workers) can share one file
without interleaving inside a batch, and a fork never duplicates buffered lines.

Guarantees (Vector style, see ``stats``): every record handed to ``emit`` is either written, or counted as
dropped with the reason (queue full: the disk cannot keep up; format error). Queued records are written at
exit: ``close`` drains the queue, and an ``atexit`` hook plus ``logging.shutdown`` call it. In a forked child
the listener restarts on the first emit and the parent's queued records are not written twice.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import sys
import threading
import time
import weakref
from collections import Counter
from typing import IO, Any, Final

from logging_apm import emit as _emit
from logging_apm.emit import EVENT_LOGGER, REQUEST, build_pending, build_request, event_record

__all__ = ["BackgroundHandler"]

_STOP: Final = object()
_INFO: Final = logging.INFO
_log = logging.getLogger("logging_apm.internal")
_live: weakref.WeakSet[BackgroundHandler] = weakref.WeakSet()


class BackgroundHandler(logging.Handler):
    """Queue + listener thread + file/stream writer. Give it ``filename`` or ``stream`` (or both).

    ``max_queue`` bounds memory when the disk stalls: beyond it records are dropped and counted (and the
    first drop is logged), never blocking the request thread.
    """

    def __init__(
        self,
        filename: str | os.PathLike[str] | None = None,
        stream: IO[Any] | None = None,
        *,
        max_queue: int = 100_000,
        max_batch: int = 1024,
        interval: float = 0.05,
        level: int | str = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        if filename is None and stream is None:
            raise ValueError("BackgroundHandler needs a filename, a stream, or both")
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be positive")
        self.filename = os.fspath(filename) if filename is not None else None
        self.stream = stream
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.interval = interval
        # received, written, dropped.<reason> (queue_full is counted by callers, the rest by the listener)
        self.stats: Counter[str] = Counter()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._closed = False
        if self.filename is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.filename)), exist_ok=True)
            self._open()  # fail at configuration time, not on the first event, when the path is unusable
        _live.add(self)

    # -- the calling thread -------------------------------------------------------------------------------

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: SimpleQueue is thread-safe, and the lock would serialise every request thread.
        if self.filter(record):
            self.emit(record)
            return True
        return False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._thread is None:
                self._start()
            if self._queue.qsize() >= self.max_queue or self._closed:
                self._drop("closed" if self._closed else "queue_full")
                return
            if type(record.msg) is not dict:
                # An ordinary record may carry mutable args or a traceback: render them now, as the stdlib
                # QueueHandler does. Timing events are fresh dicts nobody mutates after emit.
                record.msg = record.getMessage()
                record.args = None
                if record.exc_info and not record.exc_text:
                    record.exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
            self._queue.put(record)
        except Exception:
            self.handleError(record)

    def enqueue_event(self, event: dict[str, Any] | tuple[Any, ...]) -> bool:
        """Queue a timing event without a log record (``logging_apm.emit``'s fast path): an event dict, or a
        pending event (``emit.PendingEvent``, or ``emit.PendingRequest`` from ``Emitter.emit_request``) whose
        line the listener thread builds.

        Returns False, having done nothing, when this handler has filters or a level above INFO: then the
        caller must go through ``handle`` with a record so that they apply.
        """
        if self.filters or self.level > _INFO:
            return False
        if self._thread is None:
            self._start()
        if self._queue.qsize() >= self.max_queue or self._closed:
            self._drop("closed" if self._closed else "queue_full")  # after close nothing would write it
        else:
            self._queue.put(event)
        return True

    def _drop(self, reason: str) -> None:
        key = f"dropped.{reason}"
        self.stats[key] += 1
        if self.stats[key] == 1:
            _log.warning("logging_apm: %s dropping records (%s); counted in stats[%r]",
                         self.filename or "stream", reason, key)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name="logging_apm-writer", daemon=True)
            thread.start()
            self._thread = thread

    def flush(self) -> None:
        """Wait (up to 10 s) until everything queued so far is written."""
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(10.0)

    def close(self) -> None:
        """Drain the queue, stop the listener, close the file. Safe to call more than once."""
        if not self._closed:
            self._closed = True
            thread = self._thread
            if thread is not None and thread.is_alive() and thread is not threading.current_thread():
                self._queue.put(_STOP)
                thread.join(10.0)
            else:
                self._write_batch(self._drain())  # listener never started (or died): write inline
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        super().close()

    # -- the listener thread ------------------------------------------------------------------------------

    def _drain(self) -> list[Any]:
        items: list[Any] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _run(self) -> None:
        q = self._queue
        while True:
            batch = [q.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            if not self._write_batch(batch):
                return
            if len(batch) < self.max_batch:
                # Let records accumulate: waking per record would cost a thread switch and a write each.
                # flush() and close() still complete, at most one interval later.
                time.sleep(self.interval)

    def _write_batch(self, batch: list[Any]) -> bool:
        """Format and write ``batch``; returns False when it contained the stop marker."""
        lines: list[bytes] = []
        append = lines.append
        waiters: list[threading.Event] = []
        keep_running = True
        fmt = self.formatter
        format_bytes = getattr(fmt, "format_bytes", None)
        format_event = getattr(fmt, "format_event", None)
        format_request = getattr(fmt, "format_request", None)
        format_pending = getattr(fmt, "format_pending", None)
        received = 0
        for item in batch:
            if type(item) is tuple:  # a pending event (enqueue_event): the common case
                received += 1
                try:
                    if item[0] is REQUEST:
                        if format_request is not None:
                            line = format_request(item)
                            if line is not None:
                                append(line)
                                continue
                        item = build_request(item)
                    else:
                        if format_pending is not None:
                            line = format_pending(item)
                            if line is not None:
                                append(line)
                                continue
                        item = build_pending(item)
                    if format_event is not None:
                        # JSON escapes newlines: one line. Adding the newline copies orjson's output into a
                        # small object and frees it at once; a batch holding orjson's own buffers (allocated
                        # at 1 kB, then shrunk) made glibc's malloc eight times slower than the encoding.
                        append(format_event(item) + b"\n")
                        continue
                except Exception as exc:
                    self._format_failed(exc)
                    continue
                item = event_record(item, EVENT_LOGGER)
            elif type(item) is dict:  # an event queued without a record (enqueue_event)
                received += 1
                if format_event is not None:
                    try:
                        append(format_event(item) + b"\n")
                    except Exception as exc:
                        self._format_failed(exc)
                    continue
                item = event_record(item, EVENT_LOGGER)
            elif item is _STOP:
                keep_running = False
                continue
            elif isinstance(item, threading.Event):
                waiters.append(item)
                continue
            else:
                received += 1
            try:
                line = format_bytes(item) if format_bytes is not None else self.format(item).encode()
            except Exception as exc:
                self._format_failed(exc)
                continue
            append(line.replace(b"\n", b"\\n") + b"\n" if b"\n" in line else line + b"\n")
        self.stats["received"] += received  # counted in the one listener thread: no increment is lost
        if lines:
            self._write(b"".join(lines), len(lines))
        for waiter in waiters:
            waiter.set()
        if not keep_running:
            self._write_batch(self._drain())  # anything put after the stop marker, e.g. at exit
        return keep_running

    def _format_failed(self, exc: Exception) -> None:
        self._drop("format_error")
        from logging_apm.errors import instrumentation_failed

        instrumentation_failed("handler.format", exc)

    def _write(self, data: bytes, count: int) -> None:
        try:
            if self.filename is not None:
                self._reopen_if_rotated()
                assert self._fd is not None
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
            if self.stream is not None:
                target = getattr(self.stream, "buffer", None)
                if target is not None:
                    target.write(data)
                else:
                    self.stream.write(data.decode())
                self.stream.flush()
            self.stats["written"] += count
        except Exception as exc:
            self.stats["dropped.write_error"] += count
            from logging_apm.errors import instrumentation_failed

            instrumentation_failed("handler.write", exc)

    def _open(self) -> None:
        assert self.filename is not None
        fd = os.open(self.filename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                     0o644)
        st = os.fstat(fd)
        self._fd, self._identity = fd, (st.st_dev, st.st_ino)

    def _reopen_if_rotated(self) -> None:
        assert self.filename is not None
        try:
            st = os.stat(self.filename)
            identity: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            identity = None
        if identity is None or identity != self._identity or self._fd is None:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._open()

    # -- process life cycle -------------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        # The listener thread does not exist in the child, and the parent's queued records are the parent's
        # to write: start over with an empty queue; the listener restarts on the first emit.
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._start_lock = threading.Lock()
        self.stats = Counter()


def _after_fork_in_child() -> None:
    for handler in list(_live):
        handler._after_fork_in_child()


def _close_all() -> None:
    for handler in list(_live):
        try:
            handler.close()
        except Exception:  # pragma: no cover - exit path must not raise
            print("logging_apm: could not flush a log handler at exit", file=sys.stderr)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all)
_emit._background = BackgroundHandler  # Emitter.emit_request inlines enqueue_event for this class
