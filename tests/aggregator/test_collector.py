"""The cyclic collector around a run (``aggregator.collector``): off during the set-up and the read, on for the
post-commit stages with what the run allocated until then frozen, everything handed back after the run."""

from __future__ import annotations

import gc
import sys
import time
import types
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator import collector
from aggregator.config import load_config
from aggregator.loggen import generate_events, write_log
from aggregator.model import RunContext, StageResult
from aggregator.run import execute


@pytest.fixture(autouse=True)
def _restored() -> Iterator[None]:
    """Each test starts with the collector on and nothing frozen, and leaves the process so."""
    assert gc.isenabled() and gc.get_freeze_count() == 0
    yield
    collector.resume()
    collector.thaw()
    gc.enable()
    gc.unfreeze()


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_paused_then_resumed_with_what_was_allocated_frozen() -> None:
    collector.pause()
    assert not gc.isenabled()
    during = _Node()
    collector.resume()
    assert gc.isenabled() and gc.get_freeze_count() > 0
    assert during not in gc.get_objects()  # frozen: no generation holds it
    after = _Node()
    assert after in gc.get_objects()
    collector.thaw()
    assert gc.get_freeze_count() == 0 and during in gc.get_objects(generation=2)
    collector.resume()  # nothing more to do
    collector.thaw()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_frozen_garbage_is_collected_after_the_thaw() -> None:
    collector.pause()
    node = _Node()
    ref = weakref.ref(node)
    del node  # garbage, kept alive by its own cycle
    collector.resume()
    gc.collect()
    assert ref() is not None  # out of the collector's reach while frozen
    collector.thaw()
    gc.collect()
    assert ref() is None


def test_a_collector_the_caller_turned_off_stays_off() -> None:
    gc.disable()
    collector.pause()
    collector.resume()
    collector.thaw()
    assert not gc.isenabled() and gc.get_freeze_count() == 0


def test_the_process_own_freeze_is_left_alone() -> None:
    """Objects a process froze itself are not handed back by thaw: the collector comes back on unfrozen."""
    mine = _Node()
    gc.freeze()
    frozen = gc.get_freeze_count()
    collector.pause()
    _Node()
    collector.resume()
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    collector.thaw()
    assert gc.get_freeze_count() == frozen and mine not in gc.get_objects()


def test_paused_block_hands_everything_back_however_it_ends() -> None:
    with pytest.raises(RuntimeError), collector.paused():
        assert not gc.isenabled()
        collector.resume()  # as a run does for its stages
        assert gc.isenabled() and gc.get_freeze_count() > 0
        raise RuntimeError
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_run_stages_with_the_read_frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a run, the post-commit stages find the collector on and the run's objects frozen (the read's
    windows among them); after the run it is on and nothing is frozen."""
    seen: list[tuple[bool, int, bool]] = []

    def stage(ctx: RunContext) -> StageResult:
        held = [o for o in gc.get_objects() if type(o).__name__ == "WindowState"]
        seen.append((gc.isenabled(), gc.get_freeze_count(), bool(held)))
        return StageResult("probe")

    mod = types.ModuleType("collector_probe_stage")
    mod.stage = stage  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "collector_probe_stage", mod)
    start = int(time.time() // 60) * 60 - 1800
    log = tmp_path / "app.log"
    write_log(log, generate_events(3000, start=start, seconds=600, seed=3))
    config = load_config(environ={}, overrides={"run.workers": 2})
    report = execute(config, inputs=[str(log)], state_path=tmp_path / "s.db", stages=("collector_probe_stage:stage",),
                     warn=lambda m: None, part_bytes=64 << 10)
    assert report.ok and report.events == 3000
    assert len(seen) == 1
    enabled, frozen, windows_walked = seen[0]
    assert enabled and frozen > 0 and not windows_walked
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_the_run_command_turns_it_back_on_when_it_stops_early(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``logapm run`` pauses the collector before loading the run's modules: it is on again however the
    command ends, here a usage error before any run."""
    from aggregator import cli

    monkeypatch.delenv("LOGAPM_INPUTS", raising=False)
    monkeypatch.delenv("LOGAPM_CONFIG", raising=False)
    assert cli.main(["run", "--state", "unused.db"]) == 2
    assert "no input" in capsys.readouterr().err
    assert gc.isenabled() and gc.get_freeze_count() == 0
