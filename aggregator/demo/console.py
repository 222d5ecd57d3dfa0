"""The demo's console: steps, indented detail, a progress bar that redraws in place on a terminal (and
prints a few milestone lines when the output is a file or a pipe), colour only on a terminal without
``NO_COLOR``."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34", "cyan": "36"}


class Console:
    def __init__(self, stream: TextIO | None = None, *, color: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.color = (self.tty and "NO_COLOR" not in os.environ) if color is None else color
        self._last_bar = 0.0
        self._milestone = -1

    def style(self, text: str, *names: str) -> str:
        if not self.color or not names:
            return text
        codes = ";".join(_CODES[n] for n in names)
        return f"\033[{codes}m{text}\033[0m"

    def print(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def title(self, text: str, subtitle: str = "") -> None:
        self.print(self.style(text, "bold"))
        if subtitle:
            for line in subtitle.splitlines():
                self.print("  " + self.style(line, "dim"))
        self.print()

    def step(self, text: str) -> None:
        self.print(self.style("▸ ", "cyan") + self.style(text, "bold"))

    def detail(self, text: str, *names: str) -> None:
        self.print("  " + self.style(text, *names))

    def kv(self, key: str, value: str, width: int = 11) -> None:
        self.print(f"  {self.style(key.ljust(width), 'dim')} {value}")

    def bar(self, done: int, total: int, text: str) -> None:
        """A progress bar: redrawn at most 20 times a second on a terminal; otherwise a line per 25%."""
        fraction = done / total if total else 1.0
        if self.tty:
            now = time.monotonic()
            if done < total and now - self._last_bar < 0.05:
                return
            self._last_bar = now
            width = 28
            filled = int(fraction * width)
            bar = self.style("█" * filled, "green") + self.style("░" * (width - filled), "dim")
            self.stream.write(f"\r\033[K  {bar} {fraction * 100:3.0f}%  {text}")
            if done >= total:
                self.stream.write("\n")
            self.stream.flush()
            return
        milestone = int(fraction * 4)
        if milestone > self._milestone:
            self._milestone = milestone
            self.print(f"  {fraction * 100:3.0f}%  {text}")
