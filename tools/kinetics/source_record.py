"""Whether a re-encode's output is still its source's: the tree's record of the size and mtime each source had when
its output was written (``reencode.py`` reads it to plan, and adds a line per video it encodes).

A source is changed when its size or mtime differs from the record, either way: a downloader that sets a file's
mtime to the video's upload date (yt-dlp does, unless --no-mtime) made a fresh download look older than the output,
which an mtime-only rule ("the source is newer") kept as done.
"""

from __future__ import annotations

import json
import os
from typing import IO

from evautil.files import atomic_write_text

__all__ = ["SOURCES_RECORD", "read_sources", "compact_sources", "open_record", "append_source", "source_stat",
           "output_is_current"]

# One JSON line per encoded video, ``[<output path relative to --dst>, <source size>, <source mtime_ns>]``, the last
# line of an output the one that holds. Hidden, so that neither a re-encode nor the lists take it for a video.
SOURCES_RECORD = ".reencode_sources.jsonl"


def _record_path(dst_root: str) -> str:
    return os.path.join(dst_root, SOURCES_RECORD)


def read_sources(dst_root: str) -> tuple[dict[str, tuple[int, int]], int]:
    """``({output path: (source size, source mtime_ns)}, lines read)`` of the record in ``dst_root``; ``({}, 0)``
    without one. A line that cannot be read (the last one of a run killed while writing it) is passed over: its
    output then falls back on :func:`output_is_current`'s rule for outputs without a record."""
    found: dict[str, tuple[int, int]] = {}
    lines = 0
    try:
        with open(_record_path(dst_root), encoding="utf-8", errors="replace") as f:
            for line in f:
                lines += 1
                try:
                    rel, size, mtime_ns = json.loads(line)
                    found[os.path.join(dst_root, rel)] = (int(size), int(mtime_ns))
                except (ValueError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return found, lines


def compact_sources(dst_root: str) -> None:
    """Rewrite the record with one line per output when it holds more: each run that encodes a video again adds a
    line for it. Read again here, under the run's lock: a run that ended since the plan read it may have added
    lines."""
    sources, lines = read_sources(dst_root)
    if lines > len(sources):
        atomic_write_text(_record_path(dst_root), "".join(_line(dst_root, dst, stat) for dst, stat in sources.items()))


def _line(dst_root: str, dst: str, stat: tuple[int, int]) -> str:
    return json.dumps([os.path.relpath(dst, dst_root), *stat]) + "\n"  # ASCII: a name not UTF-8 is escaped


def append_source(record: IO[str], dst_root: str, dst: str, stat: tuple[int, int]) -> None:
    """Add to the open record (appending) that ``dst`` was written from a source of ``stat``, at once, so that a run
    killed outright keeps the lines of the videos it finished."""
    record.write(_line(dst_root, dst, stat))
    record.flush()


def open_record(dst_root: str) -> IO[str]:
    """The record of ``dst_root``, opened for :func:`append_source`."""
    os.makedirs(dst_root, exist_ok=True)
    return open(_record_path(dst_root), "a", encoding="utf-8")


def source_stat(src: str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of ``src``, taken before it is encoded (a source replaced during the encode is then
    changed for the next run); None when it is gone (its encode reports that)."""
    try:
        st = os.stat(src)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def output_is_current(src: str, dst: str, recorded: tuple[int, int] | None) -> bool:
    """True when ``dst`` exists, is not empty and its source is the one it was written from: the size and mtime
    ``recorded`` for it (any difference: changed), or for an output without a record (written before records
    were kept, or by a run killed before its line), a source not newer than it. An empty output is what a machine
    that went down could leave of a file renamed before its data reached the disk (outputs written before they
    were synced): it was skipped as done on every rerun, the video lost to the lists."""
    try:
        out = os.stat(dst)
        if out.st_size == 0:
            return False
        st = os.stat(src)
    except FileNotFoundError:  # no output yet (or a source gone since the plan: its encode reports that)
        return False
    if recorded is not None:
        return (st.st_size, st.st_mtime_ns) == recorded
    return out.st_mtime_ns >= st.st_mtime_ns
