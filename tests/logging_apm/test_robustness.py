"""Failures of the instrumentation never reach the app; the writer survives fork; the import stays cheap."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.cache import caches
from django.test import Client

from logging_apm import errors
from logging_apm.testing import capture_events

ROOT = Path(__file__).resolve().parents[2]


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("bug in logging_apm")


def test_db_hook_failure_keeps_the_query_working(monkeypatch: pytest.MonkeyPatch, seeded: None) -> None:
    """If obfuscation raises, the query still returns its rows; the failure is counted, the event lost."""
    from djangoapp.models import Author

    import logging_apm.db as db

    before = errors.failures["db.record"]
    monkeypatch.setattr(db._sql, "obfuscate", _boom)
    with capture_events() as events:
        assert Author.objects.count() == 5
    assert events.of_kind("db") == []
    assert errors.failures["db.record"] == before + 1


def test_cache_hook_failure_keeps_the_call_working(monkeypatch: pytest.MonkeyPatch) -> None:
    """If building the cache event raises, the cache call still works; the failure is counted."""
    import logging_apm.cache as apm_cache

    before = errors.failures["cache.record"]
    monkeypatch.setattr(apm_cache, "_keys", _boom)
    c = caches["default"]
    c.set("robust", 1)
    assert c.get("robust") == 1
    assert errors.failures["cache.record"] >= before + 2


class _BoomSet:
    """A set whose membership test raises (the middleware's method check: a bug while building the event)."""

    def __contains__(self, item: object) -> bool:
        raise RuntimeError("boom")


def test_failure_is_logged_once_then_counted(caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing place logs its traceback the first time only; later failures are counted silently."""
    import logging_apm.middleware as mw

    monkeypatch.setattr(mw, "KNOWN_METHODS", _BoomSet())
    monkeypatch.delitem(errors.failures, "middleware.finish", raising=False)
    with caplog.at_level(logging.ERROR, logger="logging_apm.internal"):
        for _ in range(3):
            assert Client().get("/ping/").status_code == 200
    assert errors.failures["middleware.finish"] == 3
    assert len([r for r in caplog.records if "middleware.finish" in r.getMessage()]) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_writer_restarts_in_a_forked_child(tmp_path: Path) -> None:
    """A child forked after the writer started (gunicorn --preload) writes its own events; none duplicated."""
    code = f"""
import logging.config, os, sys
from logging_apm.logging_config import build_logging
from logging_apm import emit
logging.config.dictConfig(build_logging({str(tmp_path / "e.log")!r}, stdout=False))
emit.configure()
ev = lambda who: emit.emit("metric", None, "success", {{"metric.name": who, "metric.type": "count",
                                                       "metric.value": 1}})
ev("parent_before")
pid = os.fork()
if pid == 0:
    ev("child")
    sys.exit(0)
os.waitpid(pid, 0)
ev("parent_after")
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    names = sorted(json.loads(line)["metric.name"] for line in (tmp_path / "e.log").read_text().splitlines())
    assert names == ["child", "parent_after", "parent_before"]


def test_importing_the_schema_does_not_import_django() -> None:
    """The aggregator imports logging_apm.schema (and the logging config) without Django configured."""
    code = ("import sys, logging_apm, logging_apm.schema, logging_apm.logging_config, logging_apm.sql\n"
            "assert not [m for m in sys.modules if m == 'django' or m.startswith('django.')], 'django'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
