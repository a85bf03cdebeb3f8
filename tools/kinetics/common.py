"""What every Kinetics preparation step shares: its error type, a process pool with a progress bar, and the
progress lines of a long walk through a tree."""

from __future__ import annotations

import time
from typing import Callable, Iterator, Sequence

from evautil.progress import counted, format_duration, format_rate, stderr_line
from evautil.workers import map_with_progress

__all__ = ["KineticsError", "parallel_map", "parallel_imap", "WalkProgress", "WALK_PROGRESS_EVERY_S"]

# A walk that takes longer than this says how far it got, and again as often (a 650,000-file tree takes some 25 s on
# a local disk and minutes on network storage, with nothing to show before); a quicker one says nothing.
WALK_PROGRESS_EVERY_S = 5.0


class KineticsError(ValueError):
    """Bad input for dataset preparation (missing root, empty class, unreadable file, ...); the message names it."""


def parallel_map(fn: Callable, items: Sequence, workers: int, desc: str, progress: bool,
                 on_crash: Callable | None = None) -> list:
    """The list of :func:`parallel_imap`'s results."""
    return list(parallel_imap(fn, items, workers, desc, progress, on_crash))


def parallel_imap(fn: Callable, items: Sequence, workers: int, desc: str, progress: bool,
                  on_crash: Callable | None = None) -> Iterator:
    """``[fn(x) for x in items]``, in ``workers`` processes when workers > 1 (never forked: FFmpeg and x264 keep
    internal threads), with an optional progress bar. ``fn`` must be a module-level function. ``on_crash(x, how)``
    is the result for an item that kills its worker process (see ``evautil.workers.map_with_progress``). Without
    a bar, a plain progress line goes to stderr every 30 seconds (a 650,000-file check takes minutes)."""
    return map_with_progress(fn, items, max(1, workers), desc, progress=progress, unit="file", on_crash=on_crash,
                             log=stderr_line)


class WalkProgress:
    """Progress of a walk whose total is not known beforehand (``total`` None) or is: call :meth:`update` per item;
    past every :data:`WALK_PROGRESS_EVERY_S` seconds ``write`` gets ``<desc>: 120,000 video files so far, 4,800
    video files/s`` (or ``120,000 of 650,000 ...``), and :meth:`finish` one line with the time taken, only when a
    line was written before (a short walk stays silent)."""

    def __init__(self, desc: str, unit: str, total: int | None = None,
                 write: Callable[[str], None] = stderr_line) -> None:
        self.desc, self.unit, self.total, self.write = desc, unit, total, write
        self.done, self.lines = 0, 0
        self._every = WALK_PROGRESS_EVERY_S
        self._start = time.monotonic()
        self._next = self._start + self._every

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._every
            of = f"{self.done:,} of {counted(self.total, self.unit)}" if self.total is not None else \
                f"{counted(self.done, self.unit)} so far"
            self.write(f"{self.desc}: {of}, {format_rate(self.done, now - self._start, self.unit)}")
            self.lines += 1

    def finish(self) -> None:
        if self.lines:
            elapsed = time.monotonic() - self._start
            self.write(f"{self.desc}: {counted(self.done, self.unit)} in {format_duration(elapsed)} "
                       f"({format_rate(self.done, elapsed, self.unit)})")
