"""What every Kinetics preparation step shares: its error type, a process pool with a progress bar, the progress
lines of a long walk through a tree, and what a CSV error says of a file whose fields are not comma-separated."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

from evautil.progress import LINE_EVERY_S, ProgressLines, stderr_line
from evautil.workers import map_with_progress

__all__ = ["KineticsError", "other_separator", "parallel_map", "parallel_imap", "job_video", "walk_progress",
           "WALK_PROGRESS_EVERY_S", "PROGRESS_EVERY_S"]

# A walk that takes longer than this says how far it got, and again as often (a 650,000-file tree takes some 25 s on
# a local disk and minutes on network storage, with nothing to show before); a quicker one says nothing.
WALK_PROGRESS_EVERY_S = 5.0
# Without a bar, how often a pool's work (a check, a re-encode) says how far it got.
PROGRESS_EVERY_S = LINE_EVERY_S


class KineticsError(ValueError):
    """Bad input for dataset preparation (missing root, empty class, unreadable file, ...); the message names it."""


def other_separator(header: list[str]) -> str:
    """What a message on a CSV header without its columns adds when the header, read as one field, holds semicolons
    or tabs (a spreadsheet saved in a locale that separates fields so): that the fields are not comma-separated;
    else ""."""
    if len(header) == 1:
        for sep, name in ((";", "semicolons"), ("\t", "tabs")):
            if sep in header[0]:
                return f"; its fields are separated by {name}, not commas: save it as comma-separated values"
    return ""


def job_video(item) -> str:
    """An item of a pool's work as its errors name it: a video's path, or a job's (its first field), as the file
    system spells it. Their default, the item as Python writes it, showed a re-encode job's tuple with its settings
    and escaped a name that is not UTF-8 (``caf\\udce9``)."""
    return item[0] if isinstance(item, tuple) else str(item)


def parallel_map(fn: Callable, items: Sequence, workers: int, desc: str, progress: bool,
                 on_crash: Callable | None = None) -> list:
    """The list of :func:`parallel_imap`'s results."""
    return list(parallel_imap(fn, items, workers, desc, progress, on_crash))


def parallel_imap(fn: Callable, items: Sequence, workers: int, desc: str, progress: bool,
                  on_crash: Callable | None = None, lines: bool = True, timeout: float = 0,
                  on_timeout: Callable | None = None) -> Iterator:
    """``[fn(x) for x in items]``, in ``workers`` processes when workers > 1 or a ``timeout`` is set (never forked:
    FFmpeg and x264 keep internal threads), with an optional progress bar. ``fn`` must be a module-level function.
    ``items``: videos' paths, or jobs whose first field is one, which the errors name (:func:`job_video`).
    ``on_crash(x, how)`` is the result for an item that kills its worker process (see
    ``evautil.workers.map_with_progress``). Without a bar, a plain progress line goes to stderr every
    :data:`PROGRESS_EVERY_S` seconds (a 650,000-file check takes minutes), and one with the total time at the end;
    ``lines`` False: neither (a tool's --no-progress).
    ``timeout`` > 0: ``on_timeout(x, how)`` is the result for an item that gives no result in that many seconds
    (see ``evautil.workers.map_with_progress``); one worker is then a worker process too, as only a worker can be
    ended (an encode that never ends held a one-worker run for ever)."""
    return map_with_progress(fn, items, max(1, workers), desc, progress=progress, unit="file", on_crash=on_crash,
                             log=stderr_line if lines else None, log_every_s=PROGRESS_EVERY_S, timeout=timeout,
                             on_timeout=on_timeout, one_worker_pool=timeout > 0, describe=job_video)


def walk_progress(desc: str, unit: str, total: int | None = None, lines: bool = True) -> ProgressLines:
    """Progress lines on stderr for a walk through a tree (its size ``total`` None when not known beforehand):
    past every :data:`WALK_PROGRESS_EVERY_S` seconds how far it got, then its time taken, and nothing at all for a
    walk quicker than that; ``lines`` False: nothing at all (a tool's --no-progress)."""
    return ProgressLines(desc, total, unit, stderr_line, every_s=WALK_PROGRESS_EVERY_S if lines else None,
                         quiet=True)
