"""A tag with a runaway number of distinct values (a user id put in a tag): capped in the app (per tag, the
rest reported as ``other``) and in the aggregator (series per metric, the rest folded into ``other``), so
neither the app's memory nor the vendor's series count (and bill) follows it. Counts are kept: nothing is
dropped, only folded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pipeline_kit as kit
import pytest
from runhelp import ROOT

APP = textwrap.dedent("""
    import json, logging, logging.config, resource, sys
    from logging_apm.logging_config import build_logging
    # a queue for every event: under a loaded machine the default bound (100,000) drops (counted) what a
    # tight loop of 200,000 calls outruns the writer by, which is not what this test is about
    logging.config.dictConfig(build_logging(sys.argv[1], stdout=False, max_queue=1_000_000))
    from logging_apm.emit import configure
    from logging_apm import metrics
    configure(service_name="svc")
    n = int(sys.argv[2])
    for i in range(n):
        metrics.count("signups", plan="pro", user=f"user-{i}")
    seen = {k: len(v) for k, v in metrics._cardinality._seen.items()}
    logging.shutdown()
    print(json.dumps({"seen": {"/".join(k): v for k, v in seen.items()},
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
""")


def test_app_caps_a_runaway_tag(tmp_path: Path) -> None:
    """200,000 distinct user ids on one metric: the app remembers at most APM_METRIC_TAG_CAP (100) values
    per tag, later ones are written as ``other``, and every call is still one event with its count."""
    log = tmp_path / "app.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("APM_METRIC_TAG_CAP", None)
    proc = subprocess.run([sys.executable, "-c", APP, str(log), "200000"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["seen"] == {"signups/plan": 1, "signups/user": 100}
    users: dict[str, int] = {}
    events = 0
    with log.open("rb") as f:
        for line in f:
            if b'"apm.schema"' in line:
                tags = json.loads(line)["metric.tags"]
                users[tags["user"]] = users.get(tags["user"], 0) + 1
                events += 1
    assert events == 200_000
    assert len(users) == 101 and users["other"] == 200_000 - 100


def _runaway_log(path: Path, n: int, start: float) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(start)).encode()
    with path.open("wb") as f:
        for i in range(n):
            f.write(b'{"timestamp":"%s","apm.schema":1,"apm.kind":"metric","outcome":"success",'
                    b'"metric.name":"signups","metric.type":"count","metric.value":1,'
                    b'"metric.tags":{"user":"u%d"}}\n' % (stamp, i))


def _aggregator_cap(tmp_path: Path, n: int, cap: int) -> int:
    """``n`` distinct values of one tag (written by an app without the app-side cap) through ``logapm
    run`` to Datadog and New Relic; returns the run's peak RSS in MB."""
    p = kit.start_pipeline(tmp_path)
    p.extra_env.update(LOGAPM_MAX_SERIES=str(cap), PERFORMANCE_ALERT_EMAIL_ENABLED="false",
                       PERFORMANCE_ALERT_SLACK_ENABLED="false", LOGAPM_SINK_TIME_BUDGET_SECONDS="60")
    log = tmp_path / "app.log"
    _runaway_log(log, n, time.time() // 60 * 60 - 20 * 60)
    try:
        with (tmp_path / "out").open("w") as out:
            proc = subprocess.Popen(p.cmd(log), stdout=out, stderr=subprocess.STDOUT, env=p.env(), cwd=tmp_path)
            _, status, usage = os.wait4(proc.pid, 0)
        text = (tmp_path / "out").read_text()
        assert os.waitstatus_to_exitcode(status) == 0, text
        dd = kit.dd_counts(p.dd, "apm.business.signups")
        nr = kit.nr_counts(p.nr, "apm.business.signups")
    finally:
        p.stop()
    # The vendors see at most cap + 1 series (the cap, plus "other"), and the counts add up to n.
    assert 0 < len(dd) <= cap + 1 and 0 < len(nr) <= cap + 1, (len(dd), len(nr))
    assert sum(max(v) for v in dd.values()) == n and sum(max(v) for v in nr.values()) == n
    assert any("user:other" in tags for (_, tags) in dd)
    return int(usage.ru_maxrss // 1024)


def test_aggregator_caps_series_per_metric(tmp_path: Path) -> None:
    """50,000 distinct tag values in one run, cap 500: at most 501 series reach each vendor, their
    counts sum to 50,000."""
    _aggregator_cap(tmp_path, 50_000, 500)


@pytest.mark.slow
def test_aggregator_caps_a_million_values(tmp_path: Path) -> None:
    """The long variant: a million distinct values (``CARDINALITY_VALUES``) with the default cap (2,000),
    each sum checked against the vendors. Measured here: 14 s and 121 MB peak RSS (the workers fold past
    the cap as they read; holding every series until the commit took about two minutes and 730 MB)."""
    rss = _aggregator_cap(tmp_path, int(os.environ.get("CARDINALITY_VALUES", "1000000")), 2000)
    print(f"peak RSS {rss} MB")
    assert rss < 2048


def _distinct_routes_log(path: Path, n: int, start: float) -> tuple[int, int, float]:
    """``n`` requests, each on its own route, spread over 5 windows; returns the true count, errors and
    sum of durations (durations are whole milliseconds, so the stored sums are exact)."""
    errors, total = 0, 0.0
    with path.open("wb") as f:
        for i in range(n):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(start + i % 300)).encode()
            status = 500 if i % 7 == 0 else 200
            duration = 1 + i % 997
            errors += status == 500
            total += duration
            f.write(b'{"timestamp":"%s","apm.schema":1,"apm.kind":"request","duration_ms":%d,'
                    b'"outcome":"success","service.name":"svc","deployment.environment":"prod",'
                    b'"http.request.method":"GET","http.route":"u/%d/","http.response.status_code":%d}\n'
                    % (stamp, duration, i, status))
    return n, errors, total


def _capped_run(tmp_path: Path, n: int, cap: int) -> tuple[int, dict[Any, Any]]:
    """``logapm run`` (2 workers, no vendors) over ``n`` distinct routes; its peak RSS in MB (wait4: the
    largest of the run and its joined workers) and the stored request windows."""
    from runhelp import stored

    tmp_path.mkdir()
    log, state = tmp_path / "app.log", tmp_path / "state.db"
    want = _distinct_routes_log(log, n, time.time() // 60 * 60 - 20 * 60)
    env = {**os.environ, "APM_PROVIDER": "", "PYTHONPATH": str(ROOT), "LOGAPM_WORKERS": "2",
           "LOGAPM_MAX_SERIES": str(cap), "PERFORMANCE_ALERT_EMAIL_ENABLED": "false",
           "PERFORMANCE_ALERT_SLACK_ENABLED": "false"}
    env.pop("LOGAPM_CONFIG", None)
    with (tmp_path / "out").open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "run", "--state", str(state),
                                 "--input", str(log), "--no-progress"], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=tmp_path)
        _, status, usage = os.wait4(proc.pid, 0)
    text = (tmp_path / "out").read_text()
    assert os.waitstatus_to_exitcode(status) == 0, text
    request = {k: a for k, a in stored(state).items() if k[0] == "request"}
    assert len({k[1] for k in request}) <= cap + 1
    got = (sum(a.count for a in request.values()), sum(a.errors for a in request.values()),
           sum(a.total for a in request.values()))
    assert got == want, (got, want)  # folded, never dropped
    if n > cap:
        assert text.count("more than") == 1, text  # one warning a run, however many parts and batches
    return int(usage.ru_maxrss // 1024), request


def test_series_cap_bounds_a_runs_memory(tmp_path: Path) -> None:
    """200,000 distinct routes in one run (2 workers, several parts, cap 2,000) take about the memory of a
    run with 2,000: workers fold a family's series past the cap into ``other`` as they read, instead of
    holding every series until the commit. Totals (count, errors, sum) still equal the ground truth."""
    small, _ = _capped_run(tmp_path / "small", 2_000, 2_000)
    big, request = _capped_run(tmp_path / "big", 200_000, 2_000)
    assert any(dict(k[1])["route"] == "other" for k in request)
    print(f"peak RSS: 2k distinct {small} MB, 200k distinct {big} MB")
    # Holding every series until the commit (before the workers capped) took 494 MB against 65 MB here.
    assert big < 1.6 * small + 40, (small, big)
