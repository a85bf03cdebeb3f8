"""Progress of long work for a log file: whether a bar would be seen, durations, and plain progress lines.

A tqdm bar is drawn only when stderr is a terminal. Under a scheduler, with output redirected to a file, a bar's
carriage-return updates make an unreadable log, so there the same progress is written as plain lines instead.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Iterator

__all__ = ["stderr_is_terminal", "stderr_line", "THIS_RANK_ONLY", "format_duration", "counted", "format_bytes",
           "format_rate", "rate_known", "LINE_EVERY_S", "ProgressLines", "with_progress"]

# A rate from less than this many seconds, or fewer items, is start-up noise ("72,632 videos/s" for 3 videos in
# 40 µs): it is not shown, nor the time left worked out from it.
RATE_FROM_S = 0.5
RATE_FROM_ITEMS = 2

# Plain progress lines (no bar) come at most this often: a long job's log stays readable (a few hundred lines for a
# day's work), yet a person reading it learns something new every time they look.
LINE_EVERY_S = 30.0

# ``extra=`` of a log record only this process could have seen (a video failing in its share of the batches): a
# multi-process run's console gets it from the rank that saw it, naming the rank, where a warning every rank would
# give alike (a bad video of the index, which every rank reads) is printed by rank 0 alone.
THIS_RANK_ONLY = {"this_rank_only": True}


def stderr_is_terminal() -> bool:
    """Whether a progress bar on stderr would be seen by a person (not redirected to a file or a pipe)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def stderr_line(message: str) -> None:
    """A plain progress line on stderr (what long work writes when no bar is drawn)."""
    print(message, file=sys.stderr, flush=True)


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS`` (``D days, H:MM:SS`` past a day), or ``-`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    s = int(round(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    text = f"{hours}:{minutes:02d}:{s:02d}"
    return f"{days} day{'s' if days > 1 else ''}, {text}" if days else text


def _plural(unit: str) -> str:
    if unit.endswith("och"):  # epochs: the "ch" said as "k"
        return unit + "s"
    return unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")  # batches, not batchs


def counted(number: int, unit: str) -> str:
    """``1 view``, ``6 views``: a count with its unit in the right number."""
    return f"{number:,} {unit if number == 1 else _plural(unit)}"


def format_bytes(size: int) -> str:
    """``512 B``, ``154.86 KiB``, ``3.40 GiB``, ``5.00 PiB``: a size in the largest binary unit it holds one of (a
    few clips in GiB read ``0.00``), up to YiB."""
    if size < 1024:
        return f"{size} B"
    units = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
    for unit in units:
        size /= 1024
        if round(size, 2) < 1024 or unit == units[-1]:  # (not "1024.00 KiB")
            return f"{size:.2f} {unit}"


def format_rate(count: float, seconds: float, unit: str) -> str:
    """``1.84 videos/s``, ``72,600 videos/s``, ``1 batch/s``: ``count`` per second over ``seconds`` to 3 significant
    figures, the unit in the number the figure says; ``- videos/s`` before :data:`RATE_FROM_ITEMS` items and
    :data:`RATE_FROM_S` seconds, when a figure would mean nothing."""
    if not rate_known(count, seconds):
        return f"- {_plural(unit)}/s"
    per_s = count / seconds
    if per_s >= 999.5:  # "%.3g" would write 7.26e+04
        figure = f"{round(per_s, 3 - len(str(int(per_s)))):,.0f}"
    else:
        figure = f"{per_s:.3g}"
    return f"{figure} {unit if figure == '1' else _plural(unit)}/s"


def rate_known(count: float, seconds: float) -> bool:
    """Whether :func:`format_rate` gives a figure for ``count`` items in ``seconds`` (else the time left that the
    rate would give is not known either)."""
    return count >= RATE_FROM_ITEMS and seconds >= RATE_FROM_S


class ProgressLines:
    """Progress of ``total`` items as plain lines for a log: call :meth:`update` per finished item; ``write`` gets
    ``<desc>: 12,000 of 650,000 videos done (1.8%), 110 videos/s, eta 1:38:29`` at most every ``every_s`` seconds
    (never when ``every_s`` is None), and :meth:`finish` writes one line with the total time. ``total`` None: a
    walk whose size is not known beforehand (``<desc>: 120,000 video files so far, 4,800 video files/s``).
    ``quiet``: :meth:`finish` says nothing unless a line was written before (a short walk stays silent)."""

    def __init__(self, desc: str, total: int | None, unit: str, write: Callable[[str], None],
                 every_s: float | None = LINE_EVERY_S, quiet: bool = False) -> None:
        self.desc, self.total, self.unit, self.write, self.every_s = desc, total, unit, write, every_s
        self.quiet, self.lines = quiet, 0
        self.done = 0
        self._start = time.monotonic()
        self._next = self._start + (every_s or 0.0)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.every_s is None or self.total is not None and self.done >= self.total:  # the last: finish() says it
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every_s
            self.write(self.line(now))
            self.lines += 1

    def line(self, now: float | None = None) -> str:
        """The line for the items done so far."""
        elapsed = (time.monotonic() if now is None else now) - self._start
        if self.total is None:
            return f"{self.desc}: {counted(self.done, self.unit)} so far, {format_rate(self.done, elapsed, self.unit)}"
        left = (self.total - self.done) * elapsed / self.done if rate_known(self.done, elapsed) else None
        share = 100.0 * self.done / self.total if self.total else 100.0
        units = _plural(self.unit)
        return (f"{self.desc}: {self.done:,} of {self.total:,} {self.unit if self.total == 1 else units} done "
                f"({share:.1f}%), {format_rate(self.done, elapsed, self.unit)}, eta {format_duration(left)}")

    def finish(self) -> None:
        if self.quiet and not self.lines:
            return
        elapsed = time.monotonic() - self._start
        self.write(f"{self.desc}: {counted(self.done, self.unit)} done in {format_duration(elapsed)} "
                   f"({format_rate(self.done, elapsed, self.unit)})")


def with_progress(iterable: Iterable, total: int, desc: str, unit: str = "item") -> Iterable:
    """``iterable``, its progress on stderr as it is consumed: a tqdm bar on a terminal, else a plain line every
    30 s and one with the total time at the end (:class:`ProgressLines`)."""
    if stderr_is_terminal():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)
    return _with_lines(iterable, ProgressLines(desc, total, unit, stderr_line))


def _with_lines(iterable: Iterable, lines: ProgressLines) -> Iterator:
    for item in iterable:
        yield item
        lines.update()  # the consumer asks for the next item: this one is done
    lines.finish()
