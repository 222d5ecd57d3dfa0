"""A scripted timeline for alerting tests: minute windows written into a real state store (through the
aggregator's ``WindowsStore``), one ``logapm run``-like step per minute calling the alerting stage.

Run ``k`` commits the windows of minute ``k`` (event time ``T0 + 60 k``), like the aggregator's commit,
then calls ``alerting.stage.evaluate``; its wall clock is five seconds after that minute began.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.config import Config, load_config
from aggregator.model import RunContext, SeriesKey, StageResult, WindowAggregate, make_tags
from aggregator.sketch import sketch_of
from aggregator.store import Store
from aggregator.windows_store import WindowsStore

T0 = 1_795_000_000 - 1_795_000_000 % 3600  # an hour boundary, event time
W = 60


def request_window(minute: int, route: str, n: int, ms: float, errors: int = 0) -> WindowAggregate:
    """``n`` requests to ``route`` in minute ``minute``, around ``ms`` milliseconds each."""
    values = np.linspace(ms * 0.9, ms * 1.1, n) if n else np.array([])
    agg = WindowAggregate(SeriesKey("request", make_tags(route=route, method="GET", service="shop", env="prod")),
                          start=T0 + minute * W, width=W)
    if n:
        agg.count, agg.errors, agg.total = n, errors, float(values.sum())
        agg.min, agg.max = float(values.min()), float(values.max())
        agg.counters = {"satisfied": float((values <= 500).sum()), "tolerating": float((values > 500).sum())}
        agg.sketch = sketch_of(values)
    return agg


# A scenario: minute -> windows of that minute.
Scenario = Callable[[int], list[WindowAggregate]]


@dataclass
class Timeline:
    state: Path
    config: Config
    scenario: Scenario
    results: dict[int, StageResult] = field(default_factory=dict)

    def commit_minute(self, k: int) -> None:
        store = Store(self.state)
        try:
            with store.transaction():
                WindowsStore(store).put(self.scenario(k), now=self.wall(k))
        finally:
            store.close()

    @staticmethod
    def wall(k: int) -> float:
        return float(T0 + k * W + 5)

    def alert_run(self, k: int, *, now: float | None = None) -> StageResult:
        store = Store(self.state)
        try:
            result = self._stage()(RunContext(store=store, config=self.config, now=self.wall(k) if now is None else now))
        finally:
            store.close()
        self.results[k] = result
        return result

    def run(self, k: int) -> StageResult:
        self.commit_minute(k)
        return self.alert_run(k)

    @staticmethod
    def _stage() -> Any:
        from alerting.stage import evaluate

        return evaluate


def make_config(tmp: Path, env: Mapping[str, str], rules_toml: str = "") -> Config:
    path = tmp / "logapm.toml"
    path.write_text(rules_toml, encoding="utf-8")
    return load_config(path, environ=dict(env))


def notifier_env(smtp_host: str, smtp_port: int, slack_url: str, **extra: str) -> dict[str, str]:
    env = {
        "PERFORMANCE_ALERT_EMAIL_ENABLED": "true",
        "PERFORMANCE_ALERT_EMAIL_HOST": smtp_host,
        "PERFORMANCE_ALERT_EMAIL_PORT": str(smtp_port),
        "PERFORMANCE_ALERT_EMAIL_RECIPIENTS": "oncall@example.com",
        "PERFORMANCE_ALERT_SLACK_ENABLED": "true",
        "PERFORMANCE_ALERT_SLACK_WEBHOOK_URL": slack_url,
        "ALERT_NOTIFY_TIMEOUT_SECONDS": "5",
    }
    env.update(extra)
    return env
