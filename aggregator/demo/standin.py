"""A local stand-in for an outside payments API: a threaded HTTP server on a free loopback port.

It answers ``POST /v1/charges`` after a realistic delay (log-normal, median ``median_ms``) and fails a
share of calls with 503, so the demo's external-call metrics have a shape worth charting.
"""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: PaymentsStandIn  # type: ignore[assignment]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        stand_in = self.server
        with stand_in.lock:
            stand_in.calls += 1
            delay = stand_in.rng.lognormvariate(0.0, 0.45) * stand_in.median_ms / 1000.0
            failed = stand_in.rng.random() < stand_in.failure_rate
        time.sleep(delay)
        status = 503 if failed else 200
        body = json.dumps({"error": "try again"} if failed else {"id": f"ch_{stand_in.calls:06d}"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # the demo's console is for the demo
        pass


class PaymentsStandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *, median_ms: float = 120.0, failure_rate: float = 0.03, seed: int = 7) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.median_ms = median_ms
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.calls = 0
        self._thread = threading.Thread(target=self.serve_forever, name="payments-stand-in", daemon=True)

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.server_port}"

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"

    def start(self) -> PaymentsStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)
