"""End to end through ``logapm run``: the run queues changed windows in its transaction, the delivery stage
sends them after the commit; an outage of several runs delays delivery and loses nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from intakes import DatadogIntake, NewRelicIntake, make_cert
from intakes.kit import DD_APP, DD_KEY, NR_LICENSE, PROXY_VARS


def _write_events(path: Path, start: float, minutes: int, per_minute: int = 6) -> set[int]:
    """Request events in ``minutes`` consecutive minutes from ``start``; returns the window starts."""
    windows: set[int] = set()
    with path.open("a", encoding="utf-8") as f:
        for m in range(minutes):
            for i in range(per_minute):
                ts = start + m * 60 + i * (60 / per_minute)
                windows.add(int(ts // 60 * 60))
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"
                f.write(json.dumps({
                    "timestamp": stamp, "apm.schema": 1, "apm.kind": "request", "duration_ms": 5.0 + 7 * i,
                    "outcome": "success", "service.name": "svc", "deployment.environment": "test",
                    "http.request.method": "GET", "http.route": f"api/r{i % 2}/",
                    "http.response.status_code": 200,
                }) + "\n")
    return windows


def _logapm(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aggregator.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and not k.startswith(("DATADOG_", "NEW_RELIC_", "APM_", "DD_", "LOGAPM_"))}
    env.update(LOGAPM_STATE=str(tmp_path / "state.db"), LOGAPM_WORKERS="1",
               LOGAPM_SINK_RETRY_BASE_SECONDS="0.01", LOGAPM_SINK_RETRY_CAP_SECONDS="0.05",
               LOGAPM_SINK_RETRY_LATER_SECONDS="0.5", LOGAPM_SINK_RETRY_LATER_CAP_SECONDS="1",
               LOGAPM_SINK_MAX_ATTEMPTS="2", LOGAPM_SINK_TIMEOUT_SECONDS="2", DD_HOSTNAME="agg")
    env.update(extra)
    return env


def test_logapm_run_outage_then_every_window_once(tmp_path: Path) -> None:
    """Two runs with both vendors refusing connections, then a run with them back: every request window
    of the log reaches Datadog and New Relic, each point accepted exactly once."""
    cert = make_cert(tmp_path)
    dd = DatadogIntake(DD_KEY, DD_APP).start()
    nr = NewRelicIntake(NR_LICENSE, tls=cert).start()
    try:
        env = _env(tmp_path, APM_PROVIDER="both", DATADOG_API_KEY=DD_KEY, DATADOG_HOST=dd.url,
                   NEW_RELIC_LICENSE_KEY=NR_LICENSE, NEW_RELIC_METRIC_HOST=f"127.0.0.1:{nr.port}",
                   LOGAPM_NEW_RELIC_CA_CERTS=str(cert.cert_file))
        log = tmp_path / "app.log"
        start = (time.time() // 60) * 60 - 15 * 60
        windows = _write_events(log, start, 3)
        dd.stop()
        nr.stop()
        first = _logapm(["run", "--input", str(log), "--no-progress"], env)
        assert first.returncode == 3, first.stdout + first.stderr
        assert "datadog" in first.stdout + first.stderr and DD_KEY not in first.stdout + first.stderr
        windows |= _write_events(log, start + 3 * 60, 3)
        time.sleep(1.2)
        second = _logapm(["run", "--input", str(log), "--no-progress"], env)
        assert second.returncode == 3, second.stdout + second.stderr
        assert dd.series == [] and nr.metrics == []
        dd.start()
        nr.start()
        time.sleep(1.2)
        third = _logapm(["run", "--input", str(log), "--no-progress"], env)
        assert third.returncode == 0, third.stdout + third.stderr
    finally:
        dd.stop()
        nr.stop()
    dd_req = Counter((s["metric"], s["timestamp"], tuple(sorted(s["tags"]))) for s in dd.series
                     if s["metric"].startswith("apm.request."))
    nr_req = Counter((m["name"], m["timestamp"], tuple(sorted(m["attributes"].items()))) for m in nr.metrics
                     if m["name"].startswith("apm.request."))
    assert dd_req and set(dd_req.values()) == {1}
    assert nr_req and set(nr_req.values()) == {1}
    assert {ts for _, ts, _ in dd_req} == windows
    assert {ts // 1000 for _, ts, _ in nr_req} == windows


def test_logapm_run_without_keys_says_once_that_metrics_stay_local(tmp_path: Path) -> None:
    """No vendor key: the run succeeds and its summary says once that the metrics stay local."""
    log = tmp_path / "app.log"
    _write_events(log, (time.time() // 60) * 60 - 300, 2)
    out = _logapm(["run", "--input", str(log), "--no-progress"], _env(tmp_path, APM_PROVIDER="datadog"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (out.stdout + out.stderr).count("metrics stay local") == 1

