"""Samplers: queue depth on the real Redis and RabbitMQ brokers, DB pool utilization on the real
PostgreSQL (Django's psycopg pool under concurrent load), and the ``logapm sample`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _b_brokers import purge_queues
from kombu import Connection, Exchange, Queue

from aggregator.cli import main as logapm
from logging_apm import samplers
from logging_apm.testing import capture_events, validate_event

HERE = Path(__file__).resolve().parent
BROKERS = {"redis": "redis://127.0.0.1:6379/11", "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//"}


@pytest.fixture(params=sorted(BROKERS))
def broker_url(request: pytest.FixtureRequest) -> str:
    request.getfixturevalue("redis_server" if request.param == "redis" else "rabbitmq")
    return BROKERS[request.param]


@pytest.fixture
def filled_queues(broker_url: str) -> Iterator[dict[str, int]]:
    """Two fresh queues holding 3 and 5 messages (the 5 at mixed priorities), deleted afterwards."""
    run = uuid.uuid4().hex[:8]
    counts = {f"apmdepth-{run}-a": 3, f"apmdepth-{run}-b": 5}
    # Publisher confirms: publish() returns once RabbitMQ has enqueued the message, so the depth read right
    # after is exact even on a loaded machine (without them the last messages may still be in flight).
    with Connection(broker_url, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer()
        queues = []
        for name, n in counts.items():
            q = Queue(name, Exchange(name, type="direct"), name, max_priority=9)
            queues.append(q)
            for i in range(n):
                producer.publish({"i": i}, exchange=q.exchange, routing_key=name, declare=[q], priority=i * 2)
        yield counts
    purge_queues(broker_url, counts)


@pytest.mark.services
def test_queue_depth_per_queue(broker_url: str, filled_queues: dict[str, int]) -> None:
    """The depth of each queue is its number of ready messages (all priority levels on Redis); a queue the
    broker does not know reports 0."""
    depths = samplers.queue_depths(broker_url, [*filled_queues, "apmdepth-never-declared"])
    assert depths == {**filled_queues, "apmdepth-never-declared": 0}


@pytest.mark.services
def test_sample_command_once_and_every(broker_url: str, filled_queues: dict[str, int], tmp_path: Path,
                                       capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """`logapm sample` writes one schema-valid gauge line per queue to stdout, or appends them to --output
    every N seconds for --count passes."""
    queue_args = [arg for q in filled_queues for arg in ("--queue", q)]
    assert logapm(["sample", "--broker", broker_url, *queue_args]) == 0
    lines = [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    for e in lines:
        validate_event(e)
    assert {e["metric.tags"]["queue"]: e["metric.value"] for e in lines} == filled_queues
    assert {e["metric.name"] for e in lines} == {samplers.QUEUE_DEPTH}

    out = tmp_path / "apm.jsonl"
    assert logapm(["sample", "--broker", broker_url, *queue_args, "--every", "0.1", "--count", "3",
                   "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 3 * len(filled_queues)


@pytest.mark.services
def test_sample_command_from_a_celery_app(redis_server: tuple[str, int], monkeypatch: pytest.MonkeyPatch,
                                          capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """With --celery-app, broker and queues come from the app: one gauge per queue it routes to, with the
    depth of what was published there."""
    import sys as _sys

    run = uuid.uuid4().hex[:8]
    monkeypatch.setenv("APM_TEST_BROKER", BROKERS["redis"])
    monkeypatch.setenv("APM_TEST_QUEUE", f"apmsample-{run}")
    monkeypatch.setenv("APM_TEST_QUEUE2", f"apmsample-{run}-2")
    monkeypatch.syspath_prepend(str(HERE))
    _sys.modules.pop("_b_celery_app", None)
    import _b_celery_app as mod

    try:
        for i in range(3):
            mod.add.apply_async((i, i), queue=mod.QUEUE2)
        assert logapm(["sample", "--celery-app", "_b_celery_app:app"]) == 0
        got = {json.loads(line)["metric.tags"]["queue"]: json.loads(line)["metric.value"]
               for line in capsysbinary.readouterr().out.splitlines()}
        assert got == {mod.QUEUE: 0, mod.QUEUE2: 3}
    finally:
        purge_queues(BROKERS["redis"], [mod.QUEUE, mod.QUEUE2])
        from logging_apm import celery as apm_celery

        apm_celery.uninstall()  # importing the test app connected the signals
        _sys.modules.pop("_b_celery_app", None)


def test_sample_command_reports_an_unreachable_broker(capsys: pytest.CaptureFixture[str]) -> None:
    """A broker that cannot be reached is a clear error on stderr and exit status 1, not an empty success."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert logapm(["sample", "--broker", f"redis://127.0.0.1:{port}/0", "--queue", "q"]) == 1
    err = capsys.readouterr()
    assert "queue depth" in err.err and "Connection refused" in err.err
    assert err.out == ""


def test_sample_command_needs_a_broker(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a broker or an app the command says what is missing."""
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    assert logapm(["sample"]) == 2
    assert "--broker" in capsys.readouterr().err


@pytest.mark.services
def test_django_pool_utilization_under_concurrent_load(postgres: tuple[str, int]) -> None:
    """Django with OPTIONS pool (max 5) on the real PostgreSQL: 4 and 5 connections held read 0.8 and 1.0,
    8 threads of queries drive the sampled peak above 80%, idle reads 0, and the emitted metric event is
    db.pool.utilization tagged db=default."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}  # it configures its own
    proc = subprocess.run([sys.executable, str(HERE / "_b_pool_load.py")], capture_output=True, text=True,
                          timeout=240, cwd=HERE, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["idle"] == 0.0
    assert out["held_4"] == pytest.approx(0.8)
    assert out["held_5"] == pytest.approx(1.0)
    assert out["load_peak"] > 0.8 and out["load_samples"] > 0
    assert out["after"] == 0.0
    (event,) = out["events"]
    validate_event(event)
    assert event["metric.name"] == samplers.POOL_UTILIZATION and event["metric.type"] == "gauge"
    assert event["metric.tags"] == {"db": "default"} and event["metric.value"] == pytest.approx(0.8)


@pytest.mark.services
def test_background_sampler_on_a_real_psycopg_pool(postgres: tuple[str, int]) -> None:
    """start_background samples the given pools periodically in a daemon thread (idempotent start), and
    stop_background ends it."""
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool("host=127.0.0.1 port=5432 dbname=test user=postgres", min_size=1, max_size=2,
                          open=True)
    try:
        with capture_events() as events, pool.connection():
            samplers.start_background(every=0.05, pools={"main": pool}, include_pools=True)
            samplers.start_background(every=0.05, pools={"other": pool})  # ignored: already running
            deadline = time.monotonic() + 30
            while len(events) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            samplers.stop_background()
        assert len(events) >= 3
        assert {e["metric.tags"]["db"] for e in events} == {"main"}
        assert all(e["metric.value"] == 0.5 for e in events)  # one of two connections in use
        assert not any(t.name == "logging_apm-sampler" for t in threading.enumerate())
    finally:
        samplers.stop_background()
        pool.close()


def test_collect_reports_unreadable_pools_instead_of_hiding_them() -> None:
    """A pool whose stats cannot be read is listed in the report's errors; the others are still sampled."""

    class Broken:
        def get_stats(self) -> dict[str, int]:
            raise RuntimeError("closed")

    class Fine:
        def get_stats(self) -> dict[str, int]:
            return {"pool_max": 10, "pool_size": 4, "pool_available": 1, "requests_waiting": 0}

    report = samplers.collect(pools={"a": Broken(), "b": Fine()})
    assert [(g.name, g.value, dict(g.tags)) for g in report.gauges] == [(samplers.POOL_UTILIZATION, 0.3, {"db": "b"})]
    assert report.errors == ["pool a: RuntimeError: closed"]
