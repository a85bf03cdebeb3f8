"""What every Kinetics preparation step shares: its error type and a process pool with a progress bar."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

from evautil.progress import stderr_line
from evautil.workers import map_with_progress

__all__ = ["KineticsError", "parallel_map", "parallel_imap"]


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
