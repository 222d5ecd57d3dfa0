"""A local receiver of Fluentd's forward protocol (v1), as Fluent Bit's ``forward`` input speaks it.

Decodes the three modes: Message ``[tag, time, record(, option)]``, Forward ``[tag, [[time, record], ...]
(, option)]`` and PackedForward ``[tag, bin(msgpack stream of [time, record]) (, option)]`` (also
CompressedPackedForward, ``option.compressed == "gzip"``); time is an integer or an EventTime (ext type 0).
Answers ``{"ack": chunk}`` when the option carries a ``chunk``. It can be stopped (listening socket and
every open connection closed, like a restarting Fluent Bit) and started again on the same port.
"""

from __future__ import annotations

import gzip
import io
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

import msgpack


def event_time(value: Any) -> float:
    if isinstance(value, msgpack.ExtType) and value.code == 0:
        seconds, nanos = struct.unpack(">II", value.data)
        return seconds + nanos / 1e9
    if isinstance(value, int | float):
        return float(value)
    raise ValueError(f"bad event time {value!r}")


@dataclass
class ForwardReceiver:
    port: int = 0
    received: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    answer_acks: bool = True  # False: a receiver that takes chunks and never acknowledges them
    _sock: socket.socket | None = None
    _conns: list[socket.socket] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ForwardReceiver:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self.port = sock.getsockname()[1]
        self._sock = sock
        t = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        for t in self._threads:
            t.join(5)
        self._threads = []

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for _, _, r in self.received]

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                conn.close()
                return
            unpacker.feed(data)
            for obj in unpacker:
                try:
                    self._handle(conn, obj)
                except Exception as exc:  # a malformed message is recorded, the connection dropped
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    return

    def _handle(self, conn: socket.socket, obj: Any) -> None:
        if not isinstance(obj, list) or len(obj) < 2 or not isinstance(obj[0], str):
            raise ValueError(f"not a forward message: {obj!r}")
        tag, second = obj[0], obj[1]
        option: dict[str, Any] = {}
        entries: list[tuple[float, dict[str, Any]]] = []
        if isinstance(second, list):  # Forward mode
            mode = "Forward"
            option = obj[2] if len(obj) > 2 and isinstance(obj[2], dict) else {}
            entries = [(event_time(t), r) for t, r in second]
        elif isinstance(second, bytes):  # PackedForward / CompressedPackedForward
            option = obj[2] if len(obj) > 2 and isinstance(obj[2], dict) else {}
            payload = gzip.decompress(second) if option.get("compressed") == "gzip" else second
            mode = "CompressedPackedForward" if option.get("compressed") else "PackedForward"
            stream = msgpack.Unpacker(io.BytesIO(payload), raw=False, strict_map_key=False)
            entries = [(event_time(t), r) for t, r in stream]
        else:  # Message mode
            mode = "Message"
            if len(obj) < 3:
                raise ValueError("Message mode needs [tag, time, record]")
            option = obj[3] if len(obj) > 3 and isinstance(obj[3], dict) else {}
            entries = [(event_time(second), obj[2])]
        for _, record in entries:
            if not isinstance(record, dict):
                raise ValueError(f"record is not a map: {record!r}")
        with self._lock:
            self.modes.append(mode)
            self.received.extend((tag, t, r) for t, r in entries)
        if "chunk" in option and self.answer_acks:
            conn.sendall(msgpack.packb({"ack": option["chunk"]}))
