"""The delivery stage over the real outbox: outages across runs, 413 splits, Retry-After, age drops,
secrets kept out of everything written."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import pytest
from intakes import DatadogIntake, Fail, NewRelicIntake, kit
from intakes.kit import NR_LICENSE, config, minute, seed

from aggregator.delivery import deliver
from aggregator.model import RunContext
from aggregator.outbox import StoreOutbox
from aggregator.store import Store

# The intakes, as fixtures (tests/intakes/kit.py); proxies unset for every test.
dd, nr, no_proxies = kit.dd, kit.nr, kit.no_proxies
pytestmark = pytest.mark.usefixtures("no_proxies")


def _dd_keys(intake: DatadogIntake) -> Counter[tuple[str, int, tuple[str, ...]]]:
    return Counter((s["metric"], s["timestamp"], tuple(sorted(s["tags"]))) for s in intake.series)


def _nr_keys(intake: NewRelicIntake) -> Counter[tuple[str, int, tuple[tuple[str, object], ...]]]:
    return Counter((m["name"], m["timestamp"], tuple(sorted(m["attributes"].items()))) for m in intake.metrics)


def test_outage_of_several_runs_then_every_window_arrives_once(tmp_path: Path, dd: DatadogIntake,
                                                               nr: NewRelicIntake) -> None:
    """Both vendors down for several runs (refused connections, then 503s, then a timeout): entries stay
    pending with a retry time; once the intakes are back every window arrives, each point accepted once."""
    cfg = config(tmp_path, datadog=dd, newrelic=nr, ca_certs=nr.tls.cert_file,
                 LOGAPM_SINK_MAX_ATTEMPTS="2", LOGAPM_SINK_TIMEOUT_SECONDS="1",
                 LOGAPM_SINK_RETRY_LATER_SECONDS="1", LOGAPM_SINK_RETRY_LATER_CAP_SECONDS="2")
    base = minute(time.time()) - 20 * 60
    now = time.time()
    windows: list[int] = []
    with Store(tmp_path / "state.db") as store:
        box = StoreOutbox(store)
        dd.stop()
        nr.stop()  # run 1 and 2: connection refused
        for run in range(2):
            windows += seed(store, ["datadog", "newrelic"], [base + 60 * (2 * run), base + 60 * (2 * run + 1)],
                            routes=("a/", "b/"))
            result = deliver(RunContext(store, cfg, now=now))
            assert not result.ok and any(ln.startswith("datadog") and "not delivered" in ln for ln in result.lines)
            now += 10  # past the retry time of the entries that failed (at most 2 s later)
        dd.start()
        nr.start()
        dd.script("/api/v1/series", *[Fail(503)] * 2)  # run 3: 503s and a timeout, still down
        nr.script("/metric/v1", Fail(503), Fail(503, delay=2.5))
        windows += seed(store, ["datadog", "newrelic"], [base + 240], routes=("a/", "b/"))
        now += 10
        result = deliver(RunContext(store, cfg, now=now))
        assert not result.ok
        assert box.stats()["datadog"] == {"pending": 5} and box.stats()["newrelic"] == {"pending": 5}
        entry = box.entry("datadog", base)
        assert entry is not None and entry["attempts"] == 3 and "503" in entry["last_error"]
        assert dd.series == [] and nr.metrics == []
        # run 4: the vendors are back
        windows += seed(store, ["datadog", "newrelic"], [base + 300], routes=("a/", "b/"))
        now += 10
        result = deliver(RunContext(store, cfg, now=now))
        assert result.ok, result.lines
        assert box.stats() == {"datadog": {"delivered": 6}, "newrelic": {"delivered": 6}}
        # run 5: nothing left, nothing sent again
        deliver(RunContext(store, cfg, now=now + 3600))
    dd_keys, nr_keys = _dd_keys(dd), _nr_keys(nr)
    assert set(dd_keys.values()) == {1} and set(nr_keys.values()) == {1}
    assert {ts for _, ts, _ in dd_keys} == set(windows)
    assert {ts // 1000 for _, ts, _ in nr_keys} == set(windows)
    # every window: both routes, request metrics; New Relic also got the duration summaries
    assert Counter(name for name, _, _ in nr_keys)["apm.request.duration"] == 2 * len(windows)
    assert len(dd_keys) == len(windows) * 2 * len({n for n, _, _ in dd_keys})


def test_413_splits_the_batch_and_everything_arrives_once(tmp_path: Path, dd: DatadogIntake) -> None:
    """A 413 halves the request (recursively); each half is accepted; nothing is lost or doubled."""
    cfg = config(tmp_path, datadog=dd)
    base = minute(time.time()) - 600
    with Store(tmp_path / "state.db") as store:
        seed(store, ["datadog"], [base + 60 * i for i in range(6)], routes=("a/", "b/", "c/"))
        dd.script("/api/v1/series", Fail(413), Fail(413))
        result = deliver(RunContext(store, cfg, now=time.time()))
        assert result.ok, result.lines
        assert "batches split" in result.lines[-1]
        assert StoreOutbox(store).stats()["datadog"] == {"delivered": 6}
    statuses = [r.status for r in dd.requests_to("/api/v1/series")]
    assert statuses[:2] == [413, 413] and statuses[2:] == [202] * (len(statuses) - 2) and len(statuses) >= 4
    keys = _dd_keys(dd)
    assert set(keys.values()) == {1} and len({ts for _, ts, _ in keys}) == 6


def test_429_retry_after_is_honoured(tmp_path: Path, nr: NewRelicIntake) -> None:
    """A 429 with Retry-After: 1 delays the retry by at least a second though the backoff alone would be
    milliseconds; a Retry-After beyond this run's budget leaves the entry for a run after that time."""
    cfg = config(tmp_path, newrelic=nr, ca_certs=nr.tls.cert_file)
    base = minute(time.time()) - 600
    with Store(tmp_path / "state.db") as store:
        seed(store, ["newrelic"], [base])
        nr.script("/metric/v1", Fail(429, retry_after="1"))
        result = deliver(RunContext(store, cfg, now=time.time()))
        assert result.ok and result.counters["newrelic.retries"] == 1
        first, second = nr.requests_to("/metric/v1")
        assert first.status == 429 and second.status == 202
        assert second.at - first.at >= 0.95

        seed(store, ["newrelic"], [base + 60])
        nr.script("/metric/v1", Fail(429, retry_after="120"))
        now = time.time()
        result = deliver(RunContext(store, cfg, now=now))
        assert not result.ok
        entry = StoreOutbox(store).entry("newrelic", base + 60)
        assert entry is not None and entry["status"] == "pending" and entry["next_attempt"] >= now + 120
        assert len(nr.requests_to("/metric/v1")) == 3  # no retry inside the run: 120 s > the budget
        assert StoreOutbox(store).pending("newrelic", now + 60) == []


def test_points_too_old_for_datadog_are_counted_not_sent(tmp_path: Path, dd: DatadogIntake,
                                                         nr: NewRelicIntake) -> None:
    """Windows more than an hour old are not sent to Datadog (which would drop them silently): counted,
    reported, and their entries dropped with the reason; New Relic (48 h) still gets them."""
    cfg = config(tmp_path, datadog=dd, newrelic=nr, ca_certs=nr.tls.cert_file)
    old = minute(time.time()) - 2 * 3600
    fresh = minute(time.time()) - 120
    with Store(tmp_path / "state.db") as store:
        seed(store, ["datadog", "newrelic"], [old, fresh])
        result = deliver(RunContext(store, cfg, now=time.time()))
        box = StoreOutbox(store)
        dropped = box.entry("datadog", old)
        assert dropped is not None and dropped["status"] == "dropped" and "too old" in dropped["last_error"]
        assert box.entry("datadog", fresh)["status"] == "delivered"  # type: ignore[index]
        assert box.stats()["newrelic"] == {"delivered": 2}
    assert result.counters["datadog.dropped"] > 0 and result.counters["datadog.dropped_windows"] == 1
    assert any("not sent: too old" in ln for ln in result.lines)
    assert {s["timestamp"] for s in dd.series} == {fresh} and dd.dropped_for_age == 0
    assert {m["timestamp"] // 1000 for m in nr.metrics} == {old, fresh}


def test_no_api_key_in_logs_errors_or_store(tmp_path: Path, dd: DatadogIntake, nr: NewRelicIntake,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """Failures of every kind (403 for a key the intake rejects, 503, refused connections) never put a key
    in a log line (SDK loggers included, at DEBUG), a summary line, the outbox or the store file."""
    cfg = config(tmp_path, datadog=dd, newrelic=nr, ca_certs=nr.tls.cert_file,
                 LOGAPM_SINK_MAX_ATTEMPTS="2", LOGAPM_SINK_RETRY_LATER_SECONDS="1",
                 LOGAPM_SINK_RETRY_LATER_CAP_SECONDS="2")
    dd.api_key = "another-key"  # the intake now refuses ours: 403
    nr.script("/metric/v1", Fail(503), Fail(503, body={"error": f"echo {NR_LICENSE}"}))
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []
    with Store(tmp_path / "state.db") as store:
        seed(store, ["datadog", "newrelic"], [minute(time.time()) - 300])
        lines += deliver(RunContext(store, cfg, now=time.time())).lines
        errors = [r[0] for r in store.conn.execute("SELECT last_error FROM outbox")]
        dd.stop()
        nr.stop()
        lines += deliver(RunContext(store, cfg, now=time.time() + 10)).lines
        errors += [r[0] for r in store.conn.execute("SELECT last_error FROM outbox")]
        assert all(errors) and any("403" in e for e in errors) and any("refused" in e for e in errors)
    blob = "\n".join(lines + errors) + caplog.text
    blob_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    for secret in cfg.secrets():
        assert secret not in blob
        assert secret.encode() not in blob_bytes
    assert "***" in blob  # the echoed key was there, and was scrubbed


def test_without_keys_metrics_stay_local_and_the_run_says_so_once(tmp_path: Path) -> None:
    """No vendor keys: no lanes, nothing sent, one summary line saying the metrics stay local."""
    from aggregator.config import load_config

    cfg = load_config(environ={"APM_PROVIDER": "datadog"})
    with Store(tmp_path / "state.db") as store:
        result = deliver(RunContext(store, cfg, now=time.time()))
    assert result.ok and len(result.lines) == 1
    assert "metrics stay local" in result.lines[0] and "DATADOG_API_KEY is not set" in result.lines[0]


def test_openmetrics_lane_writes_the_file(tmp_path: Path) -> None:
    """The OpenMetrics lane delivers pending windows into the textfile and marks them delivered."""
    prom = tmp_path / "logapm.prom"
    cfg = config(tmp_path, LOGAPM_OPENMETRICS_PATH=str(prom))
    with Store(tmp_path / "state.db") as store:
        seed(store, ["openmetrics"], [600, 660])
        result = deliver(RunContext(store, cfg, now=time.time()))
        assert result.ok and StoreOutbox(store).stats()["openmetrics"] == {"delivered": 2}
    text = prom.read_text()
    assert 'apm_request_count{env="test",method="GET",route="api/stories/",service="muejam-backend"} 3.0' in text
    assert text.endswith("# EOF\n")
