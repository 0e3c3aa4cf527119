"""Progress of long loops at a steady pace: supercells of a force job, grid points of a κ job.

A :class:`Progress` is called with (done, total) after each item; it writes a line when
``every_s`` seconds or ``every_fraction`` of the total have passed since the last one (and at
the end): count, percentage, rate and the time left. On a terminal (the CLI) it redraws one
status line instead. Printing never changes what is computed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Callable ``(done, total) -> None`` that reports progress at a steady pace."""

    def __init__(
        self,
        what: str,
        unit: str,
        *,
        every_s: float = 10.0,
        every_fraction: float = 0.05,
        stream: TextIO | None = None,
        clock: Callable[[], float] | None = None,
        tty: bool | None = None,
    ) -> None:
        self.what, self.unit = what, unit
        self.every_s, self.every_fraction = every_s, every_fraction
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock or time.monotonic
        self.tty = (
            self.stream.isatty() if tty is None and hasattr(self.stream, "isatty") else bool(tty)
        )
        self.start = self.clock()
        self._last_time = self.start
        self._last_done = 0
        self.lines: list[str] = []

    def line(self, done: int, total: int) -> str:
        elapsed = self.clock() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else float("nan")
        eta = _duration(left) if left == left else "?"
        pct = 100.0 * done / total if total else 100.0
        return (
            f"[kappaflow {time.strftime('%H:%M:%S')}] {self.what}: {done}/{total} {self.unit} "
            f"({pct:.0f} %), {rate:.3g} {self.unit}/s, ~{eta} left"
        )

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        since = now - self._last_time
        due = (
            done >= total
            or since >= self.every_s
            # a fraction of the total, but not more than one line a second for fast loops
            or (total and (done - self._last_done) / total >= self.every_fraction and since >= 1.0)
        )
        if not due or done == self._last_done:
            return
        text = self.line(done, total)
        self._last_time, self._last_done = now, done
        self.lines.append(text)
        if self.tty:
            end = "\n" if done >= total else ""
            self.stream.write("\r\033[K" + text + end)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
