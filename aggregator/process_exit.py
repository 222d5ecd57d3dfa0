"""Ending the ``logapm`` process without the interpreter's teardown, once its command has finished.

After a 1M-event ``logapm run``, Python's finalisation (clearing the modules, with the garbage collections
it runs over what they hold) took 0.10-0.17 s between ``main`` returning and the process ending, a tenth of
the run; ``os._exit`` ends it in about 0.02 s. What that teardown would do that anyone can see is done here
first: the standard streams are flushed and the ``atexit`` functions run (``logging.shutdown``,
multiprocessing's, ``weakref.finalize``'s). What it would do besides is free memory and call ``__del__``:
that is only safe to skip when nothing still open holds data of its own, so a command declares it
(``finished``) once its stores are closed, its locks released and its files written and closed. ``logapm
run`` does: every file it writes (dead letters, OpenMetrics, the run lock) is closed before ``execute``
returns, and the state store is closed in ``execute``.

The fast end is taken only by the process's entry point (``end``), never by ``aggregator.cli.main``, which
tests and library users call in-process, and only when nothing else runs: no other thread (the normal
shutdown would join one) and no child process. Otherwise, or when a stream cannot be flushed (a closed
pipe), the process ends the ordinary way, with the ordinary messages and status. Large objects the
command no longer needs may be left to that end (``keep``) rather than freed one by one before it.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

_finished = False
_kept: list[object] | None = None  # None until the entry arms ``keep``


def finished() -> None:
    """The running command has flushed and closed everything it wrote: its process may end without the
    interpreter's teardown."""
    global _finished
    _finished = True


def reset() -> None:
    """A new command starts: whatever an earlier one in this process declared does not hold for it."""
    global _finished
    _finished = False


def arm() -> None:
    """The process's entry ends it through ``end``: what ``keep`` is given may wait for that."""
    global _kept
    if _kept is None:
        _kept = []


def keep(*objects: object) -> None:
    """Leave ``objects`` to the process's end rather than free them when their last user returns: the fast
    end never frees them (freeing a 1M-event run's trace and window state was ~0.02 s of CPU at its end),
    the ordinary one frees them with the rest. A no-op unless the entry armed it: in-process callers (tests,
    library use) free them as before."""
    if _kept is not None:
        _kept.extend(objects)


def end(status: int) -> NoReturn:
    """End the process with ``status``: at once when ``finished`` was declared and it is safe, else through
    ``sys.exit``."""
    if _finished and _alone() and _flushed():
        atexit._run_exitfuncs()
        if _flushed():
            os._exit(status)
    sys.exit(status)


def _alone() -> bool:
    if threading.active_count() != 1:
        return False
    mp = sys.modules.get("multiprocessing")
    return mp is None or not mp.active_children()


def _flushed() -> bool:
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or file: the ordinary end reports it as it always did
            return False
    return True
