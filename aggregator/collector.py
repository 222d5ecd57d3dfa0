"""The cyclic garbage collector around a run: off while it sets up and reads, back on for its post-commit
stages with what it allocated until then out of the collector's reach.

The set-up (imports, configuration, the store) and the read allocate millions of objects and make no reference
cycles worth collecting: with the collector on, the set-up ran ~50 collections (~7 ms of CPU before the
workers fork) and the read spent ~10% of a run rescanning the heap. Turning it back on with ``gc.enable()``
alone is not free either: its first collections walk every object allocated while it was off (after a
1M-event read, a generation-0 collection of all of them and then a generation-1 one, ~35 ms, finding
nothing). ``resume`` moves those objects to the permanent generation first (``gc.freeze``), so that the
collections during the stages only walk what the stages allocate; ``thaw`` hands them back to the oldest
generation when the run is over. Reference counting frees frozen objects as ever: only cycles among them
wait for the thaw.

A process that froze objects of its own is left as it was: the collector comes back on without a freeze (and
pays that collection). Not thread-safe: one run at a time in a process, as the store's lock has it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_paused = False  # pause turned the collector off, resume has not turned it back on
_frozen = False  # resume froze the objects, thaw has not handed them back


def pause() -> None:
    """Turn the collector off until ``resume``; a no-op when it is off already (paused, or by the caller's
    choice: then it stays off)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Turn the collector back on if ``pause`` turned it off, every object allocated until now frozen; a
    no-op otherwise."""
    global _paused, _frozen
    if not _paused:
        return
    if gc.get_freeze_count() == 0:  # nothing frozen: neither by an earlier resume nor by the process
        gc.freeze()
        _frozen = True
    gc.enable()
    _paused = False


def thaw() -> None:
    """Hand the objects ``resume`` froze back to the collector (to its oldest generation)."""
    global _frozen
    if _frozen:
        gc.unfreeze()
        _frozen = False


@contextmanager
def paused() -> Iterator[None]:
    """``pause`` for the block, then ``resume`` and ``thaw`` however it ends (a ``resume`` inside it, for the
    run's stages, leaves nothing for the end but the thaw)."""
    pause()
    try:
        yield
    finally:
        resume()
        thaw()
