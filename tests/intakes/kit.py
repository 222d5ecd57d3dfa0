"""Helpers the sink and delivery tests share: configs pointing at the intakes, and windows in a store."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aggregator.config import Config, load_config
from aggregator.model import SeriesKey, WindowAggregate, make_tags
from aggregator.outbox import StoreOutbox
from aggregator.sketch import sketch_of
from aggregator.store import Store
from aggregator.windows_store import WindowsStore

from .datadog import DatadogIntake
from .newrelic import NewRelicIntake
from .tls import make_cert

DD_KEY = "dd-api-key-0123456789abcdef0123456789ab"
DD_APP = "dd-app-key-fedcba9876543210fedcba9876543210abcdef"
NR_LICENSE = "eu01xx0123456789abcdef0123456789abcdNRAL"
NR_USER_KEY = "NRAK-ABCDEFGHIJKLMNOPQRSTUVWXYZ0"
PROXY_VARS = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")


def unset_proxies(monkeypatch: Any) -> None:
    """The New Relic SDK honours https_proxy and ignores no_proxy: tests talk to 127.0.0.1 directly."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


def config(tmp_path: Path, *, datadog: Any = None, newrelic: Any = None, ca_certs: Path | None = None,
           **env: str) -> Config:
    """A config delivering to the given intakes, with fast retries (tests must not sleep for long)."""
    environ = {
        "LOGAPM_STATE": str(tmp_path / "state.db"),
        "LOGAPM_SINK_RETRY_BASE_SECONDS": "0.01",
        "LOGAPM_SINK_RETRY_CAP_SECONDS": "0.05",
        "LOGAPM_SINK_TIMEOUT_SECONDS": "2",
        "LOGAPM_SINK_TIME_BUDGET_SECONDS": "20",
        "DD_HOSTNAME": "aggregator-1",
    }
    providers = []
    if datadog is not None:
        providers.append("datadog")
        environ.update(DATADOG_API_KEY=DD_KEY, DATADOG_APP_KEY=DD_APP, DATADOG_HOST=datadog.url)
    if newrelic is not None:
        providers.append("newrelic")
        environ.update(NEW_RELIC_LICENSE_KEY=NR_LICENSE, NEW_RELIC_METRIC_HOST=f"127.0.0.1:{newrelic.port}",
                       NEW_RELIC_APP_NAME="muejam-backend", NEW_RELIC_ENVIRONMENT="test")
        if ca_certs is not None:
            environ["LOGAPM_NEW_RELIC_CA_CERTS"] = str(ca_certs)
    environ["APM_PROVIDER"] = ",".join(providers)
    environ.update(env)
    return load_config(environ=environ)


def request_agg(start: int, route: str, values: Iterable[float], errors: int = 0) -> WindowAggregate:
    v = np.asarray(list(values), dtype=float)
    return WindowAggregate(
        SeriesKey("request", make_tags(route=route, method="GET", service="muejam-backend", env="test")),
        start, 60, count=int(v.size), errors=errors, total=float(v.sum()), min=float(v.min()),
        max=float(v.max()), counters={"satisfied": float(v.size), "tolerating": 0.0}, sketch=sketch_of(v),
    )


def seed(store: Store, sinks: list[str], starts: Iterable[int], routes: Iterable[str] = ("api/stories/",),
         now: float | None = None) -> list[int]:
    """Store one request window per (start, route) and queue each window for ``sinks``, as a run does."""
    starts = sorted(set(starts))
    now = time.time() if now is None else now
    with store.transaction():
        WindowsStore(store).put([request_agg(s, r, [10.0 + i, 20.0, 35.5 + s % 7])
                                 for s in starts for i, r in enumerate(routes)], now=now)
        StoreOutbox(store).enqueue(sinks, starts, now=now)
    return starts


def minute(t: float) -> int:
    return int(t // 60 * 60)


# --- pytest fixtures shared by the sink and delivery tests (import them by name) ------------------------

@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    unset_proxies(monkeypatch)


@pytest.fixture
def dd() -> Iterator[DatadogIntake]:
    """A running Datadog intake with the kit's keys."""
    intake = DatadogIntake(DD_KEY, DD_APP).start()
    assert isinstance(intake, DatadogIntake)
    yield intake
    intake.stop()


@pytest.fixture
def nr(tmp_path: Path) -> Iterator[NewRelicIntake]:
    """A running New Relic intake on HTTPS; its certificate (the CA to trust) is ``nr.tls``."""
    intake = NewRelicIntake(NR_LICENSE, tls=make_cert(tmp_path)).start()
    assert isinstance(intake, NewRelicIntake)
    yield intake
    intake.stop()
