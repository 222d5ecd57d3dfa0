"""SIGKILL at random instants through the whole pipeline: runs reading rotating logs, delivering to both
vendor intakes (which fail in between) and sending alerts by email and Slack, killed anywhere. After the
vendors are back and the runs settle: every event counted once, every window accepted by every vendor with
its true count, every notification the store logged received on both channels, repeats only from sends a
kill interrupted."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from intakes import Fail
from pipeline_kit import (
    Pipeline,
    dd_counts,
    notification_items,
    nr_counts,
    per_window,
    received,
    repeats,
    slow_episodes,
    start_pipeline,
    stored_notifications,
)
from runhelp import assert_matches

from aggregator.loggen import generate_events, write_log


def _rotate(log: Path) -> None:
    """logrotate's scheme: app.log.N -> app.log.N+1, app.log -> app.log.1; the app starts a new app.log."""
    n = 1
    while log.with_name(f"{log.name}.{n}").exists():
        n += 1
    for i in range(n - 1, 0, -1):
        log.with_name(f"{log.name}.{i}").rename(log.with_name(f"{log.name}.{i + 1}"))
    if log.exists():
        log.rename(log.with_name(f"{log.name}.1"))


def _vendor_trouble(p: Pipeline, rng: random.Random) -> str:
    """Break the intakes in one of several ways for the next run (restored before the following one)."""
    kind = rng.choice(["none", "none", "dd-down", "nr-down", "429", "503", "timeout"])
    if kind == "dd-down":
        p.dd.stop()
    elif kind == "nr-down":
        p.nr.stop()
    elif kind == "429":
        p.dd.script("/api/v1/series", *[Fail(429, retry_after="0")] * 3)
        p.nr.script("/metric/v1", *[Fail(429, retry_after="0")] * 3)
    elif kind == "503":
        p.nr.script("/metric/v1", Fail(503), Fail(502))
        p.dd.script("/api/v1/series", Fail(500))
    elif kind == "timeout":
        p.dd.script("/api/v1/series", Fail(hang=True, delay=1.5))
    return kind


def _restore(p: Pipeline) -> None:
    for intake in (p.dd, p.nr):
        with intake._lock:
            intake._scripts.clear()
        if intake.server is None:
            intake.start()


def _trials(tmp_path: Path, trials: int, seed: int) -> None:
    rng = random.Random(seed)
    now = time.time()
    # Event time inside Datadog's accepted hour for the whole test (long variant included).
    start = int(now // 60) * 60 - 40 * 60
    minutes = 30
    episodes = slow_episodes(start, minutes, slow={4, 5, 6, 7, 8, 20, 21, 22, 23})
    events = sorted(generate_events(400 * trials, start=start, seconds=minutes * 60, seed=seed) + episodes,
                    key=lambda e: e["timestamp"])
    cuts = sorted(rng.sample(range(1, len(events)), trials - 1))
    slices = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    p = start_pipeline(tmp_path)
    kills, troubles = 0, Counter[str]()
    try:
        duration = 0.0
        for trial, part in enumerate(slices):
            if trial and rng.random() < 0.3:
                _rotate(log)
            write_log(log, part, ordinary_every=53)
            if trial == 0:  # a clean first run measures how long one takes here
                t0 = time.monotonic()
                first = p.run(log)
                duration = time.monotonic() - t0
                assert first.returncode == 0, first.stdout + first.stderr
                continue
            troubles[_vendor_trouble(p, rng)] += 1
            kills += p.run_killed(log, after=rng.uniform(0.05, duration * 1.4 + 0.5))
            _restore(p)
        settled = p.settle(log)
        # Bounded: a settled pipeline needs few runs, whatever happened before.
        assert len(settled) <= 8, [s.returncode for s in settled]
        assert kills > 0, "no run was killed: the test proved nothing"

        # Every event counted once (counts, errors, sums, min, max per series and window).
        assert_matches(p.state, events, quantiles=False)

        # Every window reached every vendor with its true request count.
        truth = Counter(int(e["timestamp_s"]) for e in _with_seconds(events) if e["apm.kind"] == "request")
        dd, nr = dd_counts(p.dd, "apm.request.count"), nr_counts(p.nr, "apm.request.count")
        assert per_window(dd) == truth
        assert per_window(nr) == truth
        # A window is sent again when it changes (a slice ended inside it: all its series go again) or
        # when a kill interrupted the send that the vendor had already accepted; never otherwise.
        changes = Counter(w for part in slices for w in {e["timestamp_s"] for e in _with_seconds(part)})
        for accepted in (dd, nr):
            for (window, series), values in accepted.items():
                assert len(values) <= changes[window] + kills, (window, series, values, changes[window])

        # No notification lost, none repeated beyond an interrupted send.
        logged = notification_items(p.state)
        assert logged[("api_latency_p95", "firing")] >= 2 and logged[("api_latency_p95", "resolved")] >= 1, logged
        mail, slack = received(p)
        for got in (mail, slack):
            assert set(got) == set(logged)
            for item, n in logged.items():
                assert n <= got[item] <= n + kills, (item, got[item], n)

        # The same notifications, at the same event times, as one clean run over all of it.
        (tmp_path / "control").mkdir()
        control = start_pipeline(tmp_path / "control")
        try:
            write_log(tmp_path / "control" / "all.log", events)
            control.settle(tmp_path / "control" / "all.log")
            assert stored_notifications(control.state) == stored_notifications(p.state)
        finally:
            control.stop()
    finally:
        p.stop()
    print(f"trials={trials} kills={kills} troubles={dict(troubles)} settle_runs={len(settled)} "
          f"repeats dd={repeats(dd)} nr={repeats(nr)}")


def _with_seconds(events: list[dict]) -> list[dict]:
    from runhelp import _ts

    return [{**e, "timestamp_s": int(_ts(e["timestamp"]) // 60 * 60)} for e in events]


def test_pipeline_killed_at_random_instants(tmp_path: Path) -> None:
    """10 runs of the whole pipeline, each killed at a random instant (or left to finish), with logs
    rotating and intakes down, throttling, failing or hanging in between: nothing lost, nothing counted
    twice, no notification lost or repeated beyond an interrupted send."""
    _trials(tmp_path, trials=10, seed=20261129)


@pytest.mark.slow
def test_pipeline_killed_at_random_instants_long(tmp_path: Path) -> None:
    """The long variant: 100 killed runs (``FAULT_TRIALS`` sets another number, e.g. a reduced CI run)."""
    _trials(tmp_path, trials=int(os.environ.get("FAULT_TRIALS", "100")), seed=99)
