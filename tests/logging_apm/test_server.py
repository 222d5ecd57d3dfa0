"""End to end: the test project under gunicorn (a real server process, two workers), driven by a real HTTP
client, on SQLite with the local-memory cache and on PostgreSQL with Redis; the events are read back from
the JSON-lines file the workers wrote.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from logging_apm.testing import read_events

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGOAPP_", "APM_"))}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]),
        "DJANGO_SETTINGS_MODULE": "djangoapp.settings",
        "APM_LOG_FILE": str(tmp_path / "log" / "events.log"),
        "APM_LOG_STDOUT": "false",
        "DJANGOAPP_SQLITE": str(tmp_path / "db.sqlite3"),
        "NO_PROXY": "*",
    })
    env.update(extra)
    return env


class Server:
    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        # Bind port 0 here and hand the listening socket to gunicorn (fd://): no race for the port.
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        fd = self.sock.fileno()
        self.log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"fd://{fd}", "--workers", "2",
             "--graceful-timeout", "20", "djangoapp.wsgi:application"],
            env=env, pass_fds=(fd,), stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp_path)
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.proc.returncode}")
            try:
                if httpx.get(self.base + "/ping/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: workers exit and write what is queued
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.sock.close()
        self.log.close()


@pytest.fixture(params=["sqlite-locmem", "postgres-redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Server, Path, str]]:
    """The test project served by gunicorn, for one database/cache combination."""
    if request.param == "postgres-redis":
        request.getfixturevalue("redis_server")
        name = request.getfixturevalue("pg_database")
        env = _env(tmp_path, DJANGOAPP_DB="postgres", DJANGOAPP_PG_NAME=name, DJANGOAPP_CACHE="redis",
                   DJANGOAPP_REDIS_DB="12", DJANGOAPP_REDIS_PREFIX=f"server-{os.getpid()}-{time.time_ns()}")
    else:
        env = _env(tmp_path)
        subprocess.run([sys.executable, "-m", "django", "migrate", "--verbosity", "0"], env=env, check=True,
                       timeout=120, cwd=tmp_path)
    srv = Server(env, tmp_path)
    try:
        srv.wait_ready()
        yield srv, tmp_path / "log" / "events.log", request.param
    finally:
        srv.stop()


def test_real_server_writes_request_db_and_cache_events(server: tuple[Server, Path, str]) -> None:
    """Requests over HTTP give request events with route templates, db events per query, cache hit/miss,
    failures for the failing view, and the caller's trace continued, all as valid lines in the log file."""
    srv, log_path, variant = server
    with httpx.Client(base_url=srv.base, timeout=30) as client:
        assert client.get("/api/seed/?n=4").status_code == 200
        stories = client.get("/api/stories/").json()["stories"]
        assert len(stories) == 4
        traced = client.get("/api/stories/n-plus-one/", headers={"traceparent": INCOMING})
        assert traced.headers["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        sid = stories[0]["id"]
        client.get(f"/api/stories/{sid}/")
        client.get(f"/api/stories/{sid}/")
        assert client.get("/fail/").status_code == 500
        assert client.get("/api/stories/async/").status_code == 200
        assert client.request("BREW", "/ping/").status_code == 200
    srv.stop()

    events = read_events(log_path)  # every line one whole JSON object, though 2 workers share it
    requests = [e for e in events if e["apm.kind"] == "request" and e["http.route"] != "ping/"]
    # Two workers append to one file: lines are whole, but their order across workers is not the requests'.
    routes = sorted(e["http.route"] for e in requests)
    assert routes == sorted(["api/seed/", "api/stories/", "api/stories/n-plus-one/",
                             "api/stories/<int:story_id>/", "api/stories/<int:story_id>/", "fail/",
                             "api/stories/async/"])
    assert all(f"/{sid}/" not in e["http.route"] for e in requests)  # templates, never raw paths
    assert "n=4" not in log_path.read_text()  # nor query strings
    [fail] = [e for e in requests if e["http.route"] == "fail/"]
    assert fail["outcome"] == "failure" and fail["error.type"] == "RuntimeError"
    assert all(e["outcome"] == "success" for e in requests if e is not fail)
    assert any(e["http.request.method"] == "_OTHER" for e in events if e["apm.kind"] == "request")

    db = [e for e in events if e["apm.kind"] == "db"]
    assert {e["db.system"] for e in db} == {"sqlite" if variant.startswith("sqlite") else "postgresql"}
    n_plus_one = [e for e in db if e.get("trace_id") == "4bf92f3577b34da6a3ce929d0e0e4736"]
    assert len(n_plus_one) == 5  # 1 + 4 stories
    [traced_request] = [e for e in requests if e["http.route"] == "api/stories/n-plus-one/"]
    assert traced_request["parent_span_id"] == "00f067aa0ba902b7"
    assert all(e["parent_span_id"] == traced_request["span_id"] for e in n_plus_one)

    # Cache calls: the detail view twice (get miss + set, then get) and the async view (set, get hit).
    cache = [e for e in events if e["apm.kind"] == "cache"]
    assert {e["cache.name"] for e in cache} == {"default"}
    hits = sorted(e["cache.hit"] for e in cache if e["cache.operation"] == "get")
    if variant.endswith("redis"):
        assert hits == [False, True, True]  # one shared cache: the second detail call hits
    else:
        assert hits in ([False, True, True], [False, False, True])  # per-worker memory: depends on worker
    misses = hits.count(False)
    assert sorted(e["cache.operation"] for e in cache) == ["get"] * 3 + ["set"] * (1 + misses)
