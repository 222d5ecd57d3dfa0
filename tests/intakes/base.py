"""The machinery the intakes share: a threaded HTTP(S) server on 127.0.0.1 (port 0), per-request scripted
failures, and a log of every request."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .tls import SelfSignedCert


@dataclass(frozen=True)
class Fail:
    """What one scripted request gets instead of normal handling.

    ``status`` with an optional ``retry_after`` header and ``body``; ``delay`` seconds first; ``hang`` closes
    the connection after the delay without answering (a timeout for a client with a shorter timeout).
    Nothing a failed request carries is recorded as accepted.
    """

    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    hang: bool = False
    body: Any = None


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    wire_bytes: int
    status: int = 0
    at: float = field(default_factory=time.monotonic)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | ssl.SSLError | TimeoutError):
            return  # a client that gave up (timeout) or hung up: part of the scripted failures
        super().handle_error(request, client_address)


class HTTPIntake:
    """Base of the intakes. Subclasses implement ``handle(handler, method, path, body) -> (status, obj,
    headers)``."""

    def __init__(self, *, tls: SelfSignedCert | None = None, port: int = 0) -> None:
        self.tls = tls
        self._port = port
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Fail]] = {}
        self.requests: list[Request] = []
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> HTTPIntake:
        intake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with intake._lock:
                    intake._connections.add(self.connection)

            def finish(self) -> None:
                with intake._lock:
                    intake._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def _do(self) -> None:
                intake._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = _do

        self.server = _Server(("127.0.0.1", self._port), Handler)
        self._port = self.server.server_address[1]
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop kept-alive connections: clients now get connection refused (or a reset on
        a pooled connection). ``start()`` again listens on the same port."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None

    def __enter__(self) -> HTTPIntake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._port}"

    # --- scripting --------------------------------------------------------------------------------------

    def script(self, path_prefix: str, *fails: Fail) -> None:
        """The next requests whose path starts with ``path_prefix`` get these failures, one each, in order."""
        with self._lock:
            self._scripts.setdefault(path_prefix, deque()).extend(fails)

    def _next_fail(self, path: str) -> Fail | None:
        with self._lock:
            for prefix, queue in self._scripts.items():
                if path.startswith(prefix) and queue:
                    return queue.popleft()
        return None

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests
                    if r.path.startswith(path_prefix) and (method is None or r.method == method)]

    # --- request handling -------------------------------------------------------------------------------

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        path = h.path
        req = Request(h.command, path, {k.lower(): v for k, v in h.headers.items()}, len(body))
        with self._lock:
            self.requests.append(req)
        fail = self._next_fail(path.split("?", 1)[0])
        if fail is not None:
            if fail.delay:
                time.sleep(fail.delay)
            if fail.hang:
                req.status = -1
                try:
                    h.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                h.close_connection = True
                return
            headers = {"Retry-After": fail.retry_after} if fail.retry_after is not None else {}
            obj = fail.body if fail.body is not None else self.error_body(fail.status)
            self._reply(h, req, fail.status, obj, headers)
            return
        try:
            status, obj, headers = self.handle(h, h.command, path, body)
        except Exception as exc:  # a bug in the intake shows as a 500 with its text, and in the test's log
            status, obj, headers = 500, self.error_body(500, f"intake error: {exc!r}"), {}
        self._reply(h, req, status, obj, headers)

    def _reply(self, h: BaseHTTPRequestHandler, req: Request, status: int, obj: Any,
               headers: dict[str, str]) -> None:
        req.status = status
        data = b"" if obj is None else json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def error_body(self, status: int, message: str | None = None) -> Any:
        return {"errors": [message or f"status {status}"]}

    def handle(self, h: BaseHTTPRequestHandler, method: str, path: str,
               body: bytes) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError
