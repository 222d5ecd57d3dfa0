"""A progress bar for long runs, on stderr, only when stderr is a terminal and the input is large."""

from __future__ import annotations

import sys
import time
from typing import Final, TextIO

MIN_BYTES: Final = 64 << 20  # below this a run takes about a second: no bar


class Progress:
    """``start(total)``, ``update(done)`` as often as you like (redraws at most 10 times a second),
    ``finish()``. Draws nothing unless ``enabled``."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled if enabled is not None else self.stream.isatty()
        self.width = width
        self.total = 0
        self._t0 = 0.0
        self._last = 0.0
        self._drawn = False

    def start(self, total: int) -> None:
        self.total = total
        self._t0 = time.monotonic()
        if total < MIN_BYTES:
            self.enabled = False

    def update(self, done: int) -> None:
        if not self.enabled or not self.total:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        self.stream.write("\r" + self.render(done, now - self._t0))
        self.stream.flush()
        self._drawn = True

    def render(self, done: int, elapsed: float) -> str:
        frac = min(1.0, done / self.total) if self.total else 1.0
        filled = int(frac * self.width)
        rate = done / elapsed / 1e6 if elapsed > 0 else 0.0
        eta = (self.total - done) / (done / elapsed) if done and elapsed > 0 else 0.0
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {frac * 100:5.1f}% "
                f"{done / 1e6:,.0f}/{self.total / 1e6:,.0f} MB {rate:,.0f} MB/s eta {eta:,.0f}s ")

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\r" + " " * (self.width + 60) + "\r")
            self.stream.flush()
            self._drawn = False
