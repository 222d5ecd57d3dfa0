"""A run into a state store that does not exist yet: the workers start before the store is created (the plan
needs nothing from a new store), with the same results as a run into an existing empty store."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from runhelp import store_content

from aggregator import engine as engine_module
from aggregator import run as run_module
from aggregator.config import load_config
from aggregator.loggen import generate_events, write_log
from aggregator.run import execute
from aggregator.sources import InputError
from aggregator.store import Store, StoreError

BAD = b'{"apm.schema":1,"apm.kind":"request","timestamp":"2026-01-01T00:00:00.000Z","duration_ms":-5}\n'


def _config():  # type: ignore[no-untyped-def]
    return load_config(environ={}, overrides={"run.workers": 2})


@dataclass
class _Opens:
    """Each Store a run opens, as whether the workers had started (LocalEngine.start) when it was."""

    seen: list[bool] = field(default_factory=list)
    started: bool = False

    def reset(self) -> None:  # for the next run
        self.seen.clear()
        self.started = False


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> _Opens:
    opens = _Opens()
    real_start, real_store = engine_module.LocalEngine.start, run_module.Store

    def start(self: Any, *args: Any, **kwargs: Any) -> Any:
        opens.started = True
        return real_start(self, *args, **kwargs)

    def store(*args: Any, **kwargs: Any) -> Store:
        opens.seen.append(opens.started)
        return real_store(*args, **kwargs)

    monkeypatch.setattr(engine_module.LocalEngine, "start", start)
    monkeypatch.setattr(run_module, "Store", store)
    return opens


def test_a_new_store_is_created_while_the_workers_read(tmp_path: Path, opened: _Opens) -> None:
    """Into a new store the run stores what it stores into an existing empty one, twice (the second run reads
    the appended lines from the first's checkpoints); only the new store was opened after the workers
    started."""
    start = int(time.time() // 60) * 60 - 1800
    events = generate_events(6000, start=start, seconds=900, seed=23)
    log = tmp_path / "app.log"
    new, existing = tmp_path / "new.db", tmp_path / "existing.db"
    Store(existing).close()
    reports = []
    for half in (events[:3000], events[3000:]):
        write_log(log, half, ordinary_every=61)
        with open(log, "ab") as f:
            f.write(BAD)
        for state in (new, existing):
            opened.reset()
            reports.append(execute(_config(), inputs=[str(log)], state_path=state, stages=(),
                                   warn=lambda m: None, part_bytes=256 << 10))
            assert opened.seen == [state == new and len(reports) == 1]  # only the first run into `new` creates it
    first_new, first_existing, second_new, second_existing = reports
    assert first_new.parts > 1 and first_new.events == 3000 and second_new.events == 3000
    for a, b in ((first_new, first_existing), (second_new, second_existing)):
        assert a.counts() | {"duration_s": 0} == b.counts() | {"duration_s": 0}
    got_new, got_existing = store_content(new), store_content(existing)
    assert got_new["windows"] and got_new["series"] and got_new["checkpoints"] and got_new["dead_letters"]
    assert got_new == got_existing


def test_a_new_store_that_cannot_be_created_ends_the_workers(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A new store refused once the workers read: the run raises the store's error, no worker is left, and
    nothing was committed."""
    log, state = tmp_path / "app.log", tmp_path / "s.db"
    write_log(log, generate_events(3000, start=int(time.time() // 60) * 60 - 1800, seconds=600, seed=4))

    def refused(*args: Any, **kwargs: Any) -> Store:
        raise StoreError(f"state store {state} refused")

    monkeypatch.setattr(run_module, "Store", refused)
    with pytest.raises(StoreError, match="refused"):
        execute(_config(), inputs=[str(log)], state_path=state, stages=(), warn=lambda m: None,
                part_bytes=64 << 10)
    assert not multiprocessing.active_children()
    assert not state.exists()


def test_unreadable_inputs_leave_no_new_store(tmp_path: Path) -> None:
    """A first run whose input cannot be read raises before the store is created."""
    state = tmp_path / "s.db"
    with pytest.raises(InputError):
        execute(_config(), inputs=[str(tmp_path / "missing.log")], state_path=state, stages=(), warn=lambda m: None)
    assert not state.exists()
