"""Celery tasks timed through signals, with a REAL worker process on Redis and on RabbitMQ.

The test process publishes tasks (inside a span, as a request would) before the worker starts; the worker
subprocess (``celery -A _b_celery_app worker``) writes its events to a file that the test reads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _b_brokers import purge_queues
from _b_servers import RecordingHTTPServer

from logging_apm import celery as apm_celery
from logging_apm import samplers, tracing
from logging_apm.testing import capture_events, validate_event

HERE = Path(__file__).resolve().parent
REDIS_URL = "redis://127.0.0.1:6379/11"  # a db of its own; only this test's queue keys are touched
RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _load_app(monkeypatch: pytest.MonkeyPatch, broker: str, events: Path, every: float = 0) -> Any:
    run = uuid.uuid4().hex[:10]
    monkeypatch.setenv("APM_TEST_BROKER", broker)
    monkeypatch.setenv("APM_TEST_QUEUE", f"apmtest-{run}")
    monkeypatch.setenv("APM_TEST_QUEUE2", f"apmtest-{run}-2")
    monkeypatch.setenv("APM_TEST_EVENTS", str(events))
    monkeypatch.setenv("APM_TEST_SAMPLE_EVERY", str(every))
    monkeypatch.syspath_prepend(str(HERE))
    sys.modules.pop("_b_celery_app", None)
    import _b_celery_app

    return _b_celery_app


class Worker:
    def __init__(self, module: Any, tmp: Path, pool: str, beat: bool) -> None:
        self.log = tmp / "worker.log"
        cmd = [sys.executable, "-m", "celery", "-A", "_b_celery_app", "worker", f"--pool={pool}",
               "--concurrency=1", "-Q", f"{module.QUEUE},{module.QUEUE2}", "--without-gossip",
               "--without-mingle", "--without-heartbeat", "-l", "info", "-n", f"apmtest-{uuid.uuid4().hex[:6]}@%h"]
        if beat:
            cmd += ["-B", "-s", str(tmp / "beat-schedule")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               "APM_TEST_WORKER": "1"}
        # The worker is a plain Celery app: not the Django test project the test session may have set up
        # (Celery's Django fix-up would try to load it).
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _read(events: Path) -> list[dict[str, Any]]:
    if not events.exists():
        return []
    return [json.loads(line) for line in events.read_text().splitlines() if line.strip()]


def _wait_for(events: Path, worker: Worker, done: Any, timeout: float = 90.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = _read(events)
        if done(got):
            return got
        if worker.proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"worker did not produce the expected events; got {_read(events)}\n{worker.tail()}")


def _purge(module: Any) -> None:
    purge_queues(module.app.conf.broker_url, [module.QUEUE, module.QUEUE2])


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    if request.param == "redis":
        request.getfixturevalue("redis_server")
        return "redis", REDIS_URL
    request.getfixturevalue("rabbitmq")
    return "rabbitmq", RABBIT_URL


@pytest.fixture(autouse=True)
def _disconnect_after() -> Iterator[None]:
    """Importing the test app connects the signals; leave none connected for other tests."""
    yield
    apm_celery.uninstall()


@pytest.fixture
def producer_installed() -> Iterator[None]:
    apm_celery.install()
    yield
    apm_celery.uninstall()


@pytest.mark.services
def test_real_worker_emits_one_task_event_per_execution(
    broker: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, producer_installed: None
) -> None:
    """On a real broker and worker: one schema-valid task event per run with state, retries, queue, queue
    wait (at least the time the message sat before the worker started) and duration; the request's trace
    follows the task (same trace id, parent = the publishing span), a task published by a task points at it,
    and the queue-depth sampler saw the published messages on that broker."""
    name, url = broker
    events = tmp_path / "events.jsonl"
    mod = _load_app(monkeypatch, url, events)
    worker = None
    try:
        with capture_events(), tracing.start_span() as request_span:
            mod.add.delay(2, 3)
            mod.fail.delay()
            mod.flaky.delay(2)
            mod.add.apply_async((4, 5), queue=mod.QUEUE2)
            mod.fan_out.delay()
            published = time.time()  # every publish stamp is at or before this
        depths = samplers.collect(app=mod.app, include_pools=False)
        assert not depths.errors
        assert {g.tags["queue"]: g.value for g in depths.gauges} == {mod.QUEUE: 4.0, mod.QUEUE2: 1.0}

        time.sleep(1.0)  # the messages wait at least this long
        worker_started = time.time()
        worker = Worker(mod, tmp_path, pool="solo" if name == "redis" else "prefork", beat=False)
        got = _wait_for(events, worker, lambda ev: len([e for e in ev if e["apm.kind"] == "task"]) >= 8)
    finally:
        if worker is not None:
            worker.stop()
        _purge(mod)

    for e in got:
        validate_event(e)
    tasks = [e for e in got if e["apm.kind"] == "task"]
    assert len(tasks) == 8, tasks
    # the runs published by the request (add on QUEUE, add on QUEUE2, fail, fan_out, flaky's first attempt)
    direct = {(e["task.name"], e["messaging.destination.name"]): e for e in tasks
              if e.get("parent_span_id") == request_span.span_id}
    assert len(direct) == 5, tasks
    assert all(e["trace_id"] == request_span.trace_id for e in tasks)
    add, fail, fan = (direct[("apmtest.add", mod.QUEUE)], direct[("apmtest.fail", mod.QUEUE)],
                      direct[("apmtest.fan_out", mod.QUEUE)])
    assert direct[("apmtest.add", mod.QUEUE2)]["task.state"] == "success"
    assert add["task.state"] == "success" and add["outcome"] == "success" and add["task.retries"] == 0
    assert fail["task.state"] == "failure" and fail["outcome"] == "failure" and fail["error.type"] == "ValueError"

    # retries: three runs of flaky, each attempt's parent is the attempt that retried it
    flaky = sorted((e for e in tasks if e["task.name"] == "apmtest.flaky"), key=lambda e: e["task.retries"])
    assert [(e["task.state"], e["task.retries"], e["outcome"]) for e in flaky] == [
        ("retry", 0, "failure"), ("retry", 1, "failure"), ("success", 2, "success")]
    assert flaky[0]["parent_span_id"] == request_span.span_id
    assert flaky[0]["error.type"] == "ConnectionError"
    assert flaky[1]["parent_span_id"] == flaky[0]["span_id"]
    assert flaky[2]["parent_span_id"] == flaky[1]["span_id"]

    # queue wait: from publish to start, at least the time the messages sat before the worker existed
    floor_ms = (worker_started - published) * 1000.0
    assert floor_ms >= 1000
    for e in (add, fail, fan, flaky[0]):
        assert e["task.queue_wait_ms"] >= floor_ms - 5, e  # 5 ms: rounding of the two wall-clock reads
        assert e["duration_ms"] >= 0
    assert flaky[2]["task.queue_wait_ms"] < floor_ms + 60_000  # a retry's wait starts at its re-publish

    # a task published by a task points at the publishing task's span
    child = [e for e in tasks if e.get("parent_span_id") == fan["span_id"]]
    assert len(child) == 1 and child[0]["task.name"] == "apmtest.add"
    assert child[0]["messaging.destination.name"] == mod.QUEUE2
    metric = [e for e in got if e["apm.kind"] == "metric"]
    assert metric[0]["metric.name"] == "apmtest.fanned" and metric[0]["parent_span_id"] == fan["span_id"]


@pytest.mark.services
def test_beat_runs_the_sampler_task_on_redis(
    redis_server: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the sampler task in beat_schedule, a worker with embedded beat (-B) emits celery.queue.depth
    gauges for each of the app's queues, periodically."""
    events = tmp_path / "events.jsonl"
    mod = _load_app(monkeypatch, REDIS_URL, events, every=1.0)
    assert mod.app.conf.beat_schedule[apm_celery.SAMPLER_TASK_NAME]["schedule"] == 1.0
    worker = Worker(mod, tmp_path, pool="solo", beat=True)

    def enough(ev: list[dict[str, Any]]) -> bool:
        return len([e for e in ev if e.get("metric.name") == samplers.QUEUE_DEPTH]) >= 4

    try:
        got = _wait_for(events, worker, enough)
    finally:
        worker.stop()
        _purge(mod)
    depth = [e for e in got if e.get("metric.name") == samplers.QUEUE_DEPTH]
    for e in depth:
        validate_event(e)
        assert e["metric.type"] == "gauge" and e["metric.value"] >= 0
    assert {e["metric.tags"]["queue"] for e in depth} == {mod.QUEUE, mod.QUEUE2}
    sampler_runs = [e for e in got if e["apm.kind"] == "task" and e["task.name"] == apm_celery.SAMPLER_TASK_NAME]
    assert len(sampler_runs) >= 2 and all(e["task.state"] == "success" for e in sampler_runs)


def test_install_twice_emits_once_and_uninstall_stops(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """install() twice connects each handler once (one event per eager run); uninstall() twice disconnects."""
    mod = _load_app(monkeypatch, "memory://", tmp_path / "unused.jsonl")
    apm_celery.install()
    apm_celery.install()
    try:
        with capture_events() as events:
            mod.add.apply(args=(1, 2))
        assert len(events.of_kind("task")) == 1
        assert events[0]["task.name"] == "apmtest.add" and events[0]["task.state"] == "success"
    finally:
        apm_celery.uninstall()
        apm_celery.uninstall()
    with capture_events() as events:
        mod.add.apply(args=(1, 2))
    assert events == []


def test_a_broken_hook_never_breaks_the_task(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """When event building fails, the task still runs and returns its value; the failure is counted."""
    from logging_apm.errors import failures

    mod = _load_app(monkeypatch, "memory://", tmp_path / "unused.jsonl")
    monkeypatch.setattr(apm_celery, "emit", lambda *a, **k: 1 / 0)
    before = failures["celery.task_postrun"]
    apm_celery.install()
    try:
        with capture_events():
            assert mod.add.apply(args=(20, 22)).get() == 42
    finally:
        apm_celery.uninstall()
    assert failures["celery.task_postrun"] == before + 1


@pytest.mark.services
def test_task_published_in_a_django_request_continues_its_trace(
    redis_server: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, producer_installed: None
) -> None:
    """Through the real request middleware: a view that publishes a task (with an incoming traceparent) gives
    a request event and, from the worker, a task event with the same trace id whose parent is the request's
    span; an outgoing instrumented HTTP call inside the task points at the task's span."""
    from django.http import HttpResponse
    from django.test import RequestFactory

    from logging_apm.middleware import APMMiddleware

    events = tmp_path / "events.jsonl"
    mod = _load_app(monkeypatch, REDIS_URL, events)

    server = RecordingHTTPServer().start()

    def view(request: Any) -> HttpResponse:
        mod.call_http.delay(f"{server.url}/v1/verify")
        return HttpResponse("queued", status=202)

    incoming = "00-" + "4bf92f3577b34da6a3ce929d0e0e4736" + "-00f067aa0ba902b7-01"
    request = RequestFactory().post("/api/stories/", HTTP_TRACEPARENT=incoming)
    worker = None
    try:
        with capture_events() as captured:
            response = APMMiddleware(view)(request)
        assert response.status_code == 202
        (req,) = captured.of_kind("request")
        assert req["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        worker = Worker(mod, tmp_path, pool="solo", beat=False)
        got = _wait_for(events, worker, lambda ev: any(e["apm.kind"] == "task" for e in ev))
    finally:
        if worker is not None:
            worker.stop()
        _purge(mod)
        server.stop()
    (task,) = [e for e in got if e["apm.kind"] == "task"]
    (call,) = [e for e in got if e["apm.kind"] == "external"]
    for e in (task, call):
        validate_event(e)
        assert e["trace_id"] == req["trace_id"]
    assert task["parent_span_id"] == req["span_id"]
    assert task["task.name"] == "apmtest.call_http" and task["task.state"] == "success"
    assert call["parent_span_id"] == task["span_id"] and call["peer.service"] == "local-api"
    sent = tracing.parse_traceparent(server.received[-1].headers["traceparent"])
    assert sent is not None and (sent.trace_id, sent.span_id) == (req["trace_id"], call["span_id"])


def test_queue_wait_starts_at_the_eta_and_never_goes_negative() -> None:
    """A task with an ETA waits in the queue only from its ETA; a worker clock behind the publisher's
    (skew) gives 0, not a negative wait; a message without the publish stamp gives no queue wait."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    published = 1_700_000_000.0
    eta = datetime.fromtimestamp(published + 30, UTC).isoformat()
    plain = SimpleNamespace(apm_published_at=published, eta=None, headers=None)
    delayed = SimpleNamespace(apm_published_at=published, eta=eta, headers=None)
    assert apm_celery._queue_wait_ms(plain, published + 2.5) == pytest.approx(2500)
    assert apm_celery._queue_wait_ms(delayed, published + 31) == pytest.approx(1000)
    assert apm_celery._queue_wait_ms(plain, published - 1) == 0
    assert apm_celery._queue_wait_ms(SimpleNamespace(eta=None, headers=None), published) is None
    # protocol 1 / eager runs keep custom headers in a dict
    legacy = SimpleNamespace(eta=None, headers={"apm_published_at": published})
    assert apm_celery._queue_wait_ms(legacy, published + 0.25) == pytest.approx(250)
