"""The instrumented demo app under load, served by a real WSGI server: gunicorn (2 workers x 4 threads,
on 127.0.0.1, a free port) driven by a threaded load generator for a bounded number of requests and a
bounded time. Every answered request has its ``request`` event, and ``logapm run`` counts exactly the
requests the generator saw answered: in total, per method, and the 5xx among them."""

from __future__ import annotations

import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from runhelp import ROOT, logapm, stored

from aggregator.demo.traffic import ENDPOINTS

REQUESTS = int(os.environ.get("LOAD_REQUESTS", "1500"))
SECONDS = float(os.environ.get("LOAD_SECONDS", "60"))
THREADS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "gunicorn exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("gunicorn did not listen")


def _load(port: int) -> tuple[Counter[tuple[str, int]], int]:
    """Send up to REQUESTS requests from THREADS threads for at most SECONDS; (method, status) of each
    answered one, and the number that got no answer."""
    answered: Counter[tuple[str, int]] = Counter()
    unanswered = 0
    lock = threading.Lock()
    budget = iter(range(REQUESTS))
    stop_at = time.monotonic() + SECONDS
    labels = list(ENDPOINTS)
    weights = [ENDPOINTS[k][0] for k in labels]

    def worker(seed: int) -> None:
        nonlocal unanswered
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop_at:
            with lock:
                if next(budget, None) is None:
                    break
            _, method, template = ENDPOINTS[rng.choices(labels, weights)[0]]
            path = template.format(story=rng.randint(1, 200), word=rng.choice(["river", "glass"]))
            try:
                conn.request(method, path, body=b"" if method == "POST" else None)
                resp = conn.getresponse()
                resp.read()
                with lock:
                    answered[(method, resp.status)] += 1
            except (OSError, http.client.HTTPException):
                with lock:
                    unanswered += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 60)
    return answered, unanswered


def test_gunicorn_demo_app_every_answered_request_counted(tmp_path: Path) -> None:
    """A bounded load on the demo app in gunicorn: the aggregated request count equals the answered
    requests, per method and for 5xx; the events are all valid lines."""
    port = _free_port()
    env = {**os.environ, "LOAD_DIR": str(tmp_path), "PYTHONPATH": f"{ROOT / 'tests' / 'load'}:{ROOT}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "-w", "2", "--threads", "4", "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "20", "--log-level", "warning", "demo_wsgi:application"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(port, server)
        answered, unanswered = _load(port)
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: workers finish, their log writers flush
        try:
            out = server.communicate(timeout=60)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            out = server.communicate()[0].decode(errors="replace")
    total = sum(answered.values())
    print(f"answered {total} (unanswered {unanswered}) by status {dict(answered)}")
    assert total >= min(REQUESTS, 200), (answered, unanswered, out[-3000:])
    assert unanswered == 0, out[-3000:]

    proc = logapm("run", "--input", str(tmp_path / "app.log"), "--state", str(tmp_path / "state.db"), "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    windows = [a for (family, _, _), a in stored(tmp_path / "state.db").items() if family == "request"]
    assert sum(a.count for a in windows) == total
    by_method: Counter[str] = Counter()
    for a in windows:
        by_method[a.series.tag("method", "?")] += a.count
    assert by_method == _sum_by_method(answered)
    assert sum(a.errors for a in windows) == sum(n for (_, status), n in answered.items() if status >= 500)


def _sum_by_method(answered: Counter[tuple[str, int]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for (method, _), n in answered.items():
        out[method] += n
    return out
