"""What the app logs by default: route templates, never the raw path, query string, headers, cookies,
request bodies or cache keys; and log injection cannot forge an event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from runhelp import ROOT

from parsers import LineParser

SECRETS = ["987654321", "QSECRETquery", "HSECRETheader", "CSECRETcookie", "BSECRETbody", "UASECRETagent"]

CLIENT = textwrap.dedent("""
    import django, os, sys
    os.environ["DJANGO_SETTINGS_MODULE"] = "djangoapp.settings"
    django.setup()
    from django.core.management import call_command
    from django.test import Client
    call_command("migrate", run_syncdb=True, verbosity=0)
    c = Client(raise_request_exception=False)
    c.get("/api/seed/?n=3")
    for _ in range(2):  # a miss then a hit: cache events for key story:<id>
        c.get("/api/stories/1/?token=QSECRETquery&id=987654321", HTTP_AUTHORIZATION="Bearer HSECRETheader",
              HTTP_COOKIE="sessionid=CSECRETcookie", HTTP_USER_AGENT="UASECRETagent")
    c.get("/api/stories/987654321/", HTTP_X_API_KEY="HSECRETheader")
    c.post("/api/stories/?q=QSECRETquery", data="BSECRETbody", content_type="text/plain",
           HTTP_COOKIE="csrftoken=CSECRETcookie")
    c.get("/fail/?q=QSECRETquery")
    c.get("/no/such/path/987654321/QSECRETquery")
    import logging; logging.shutdown()
""")


def test_no_raw_path_query_header_cookie_body_or_cache_key_is_logged(tmp_path: Path) -> None:
    """Requests carrying secrets in the path, query string, headers, cookies and body, a cache keyed by a
    request value, a failing view and an unmatched path: the event lines hold none of them (the routes are
    templates), and the events are all there."""
    log = tmp_path / "events.log"
    env = {**os.environ, "APM_LOG_FILE": str(log), "DJANGOAPP_SQLITE": str(tmp_path / "db.sqlite3"),
           "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}"}
    proc = subprocess.run([sys.executable, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = log.read_bytes()
    events = [json.loads(line) for line in data.splitlines() if b'"apm.schema"' in line]
    routes = {e.get("http.route") for e in events if e["apm.kind"] == "request"}
    assert "api/stories/<int:story_id>/" in routes and len([e for e in events if e["apm.kind"] == "request"]) == 7
    assert any(e["apm.kind"] == "cache" for e in events) and any(e["apm.kind"] == "db" for e in events)
    for secret in SECRETS:
        assert secret.encode() not in data, (secret, [line for line in data.splitlines() if secret.encode() in line])
    assert b"story:" not in data  # the cache key
    result = LineParser().parse(data)
    assert result.invalid_total == 0 and len(result.events) == len(events)


HOSTILE = [
    'api/x/\n{"apm.schema":1,"apm.kind":"request","duration_ms":1,"timestamp":"2026-11-29T10:00:00.000Z"}',
    '"},{"apm.schema":1,"apm.kind":"request"', "\x1b[2J\x1b[31mred\r\n", "a\u2028b\u2029c\x00d", "\\n\\u000a",
    "<script>alert(1)</script>", "}\n{", "\r", "\x85next line",
]

EMITTER = textwrap.dedent("""
    import json, logging, os, sys
    import logging.config
    from logging_apm.logging_config import build_logging
    logging.config.dictConfig(build_logging(sys.argv[2], stdout=False))
    from logging_apm import metrics
    from logging_apm.emit import configure, emit
    configure(service_name="svc")
    hostile = json.loads(sys.argv[1])
    for h in hostile:
        emit("request", 5.0, "failure", {"http.request.method": "GET", "http.route": h,
             "http.response.status_code": 500, "error.type": h})
        emit("external", 1.0, "success", {"peer.service": h, "external.operation": h})
        metrics.count("signups", plan=h)
    logging.shutdown()
""")


def test_log_injection_cannot_forge_an_event(tmp_path: Path) -> None:
    """Route names, error types, peer services and tag values holding newlines, JSON fragments, ANSI
    escapes, NUL, U+2028 and markup: each emitted event is exactly one line, the parser finds exactly the
    events emitted (none forged, none lost), and each hostile string comes back as data, unchanged."""
    log = tmp_path / "events.log"
    env = {**os.environ, "APM_LOG_FILE": str(log), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", EMITTER, json.dumps(HOSTILE), str(log)], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = log.read_bytes()
    result = LineParser().parse(data, "app")
    assert len(result.events) == 3 * len(HOSTILE), (len(result.events), data[:2000])
    assert result.invalid_total == 0
    lines = [json.loads(line) for line in data.splitlines() if b'"apm.schema"' in line]
    assert len(lines) == 3 * len(HOSTILE)
    requests = [e for e in lines if e["apm.kind"] == "request"]
    externals = [e for e in lines if e["apm.kind"] == "external"]
    assert [e["peer.service"] for e in externals] == HOSTILE
    assert [e["http.route"] for e in requests] == HOSTILE and [e["error.type"] for e in requests] == HOSTILE
    assert sorted(e.metric_tags["plan"] for e in result.events if e.kind == "metric") == sorted(HOSTILE)
    for raw in data.splitlines():
        assert b"\x1b" not in raw and b"\x00" not in raw  # escaped by the JSON encoder, not written raw
