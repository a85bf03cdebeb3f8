"""Whether a re-encode's output is still its source's: the tree's record of the size and mtime each source had when
its output was written (``reencode.py`` reads it to plan, and adds a line per video it encodes).

A source is changed when its size or mtime differs from the record, either way: a downloader that sets a file's
mtime to the video's upload date (yt-dlp does, unless --no-mtime) made a fresh download look older than the output,
which an mtime-only rule ("the source is newer") kept as done.

The record gets an output's line only once its result reaches the run, after the output got its name: a run killed
(or stopped) in between left a finished output without its line, trusted on the next run if its source was not
newer (also a source downloaded again with its upload date as mtime, or a partial output of an older version), and
one encoded again from a changed source beside that source's old line, encoded once more. So each output also
carries the size and mtime of its source in its own MP4 metadata (:func:`source_note`), written with it; an output
whose line is missing or another source's is checked by that, and probed whole, and then gets its line.
"""

from __future__ import annotations

import json
import os
import re
from typing import IO

from dali_pipelines.probe_verdict import probe_video
from dali_pipelines.pyav_open import BadVideoError, open_video
from evautil.files import atomic_write_text

__all__ = ["SOURCES_RECORD", "SOURCE_NOTE_KEY", "read_sources", "compact_sources", "open_record", "append_source",
           "source_stat", "source_note", "noted_source", "output_is_whole", "current_source", "output_is_current",
           "source_changed"]

# One JSON line per encoded video, ``[<output path relative to --dst>, <source size>, <source mtime_ns>]``, the last
# line of an output the one that holds. Hidden, so that neither a re-encode nor the lists take it for a video.
SOURCES_RECORD = ".reencode_sources.jsonl"
# The output's container metadata key that names its source's size and mtime (MP4: the comment atom, which FFmpeg
# writes and reads back as is).
SOURCE_NOTE_KEY = "comment"
_NOTE = re.compile(r"re-encoded from a source of (\d+) bytes, mtime_ns (-?\d+)")


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


def source_note(stat: tuple[int, int]) -> str:
    """The metadata text (:data:`SOURCE_NOTE_KEY`) an output carries for a source of ``stat`` (size, mtime_ns)."""
    return f"re-encoded from a source of {stat[0]} bytes, mtime_ns {stat[1]}"


def noted_source(dst: str) -> tuple[int, int] | None:
    """The source ``(size, mtime_ns)`` noted in the output ``dst`` (:func:`source_note`); None when it notes none (an
    output written before notes were kept) or does not open."""
    try:
        with open_video(dst) as c:
            note = c.metadata.get(SOURCE_NOTE_KEY, "")
    except (BadVideoError, OSError):
        return None
    m = _NOTE.fullmatch(note)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _boxes_reach_file_end(path: str) -> bool:
    """Whether the MP4's top-level boxes (ftyp, moov, mdat, ...) end exactly where the file does: a file cut short
    (its data never all written) ends inside its last box, whose frames may all still demux but one."""
    size, pos = os.path.getsize(path), 0
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                return False
            n = int.from_bytes(head[:4], "big")
            if n == 0:  # the last box, to the end of the file
                return True
            if n == 1:  # a 64-bit size follows the type
                n = int.from_bytes(head[8:16], "big") if len(head) == 16 else 0
            if n < 8:
                return False
            pos += n
    return pos == size


def output_is_whole(dst: str) -> bool:
    """Whether ``dst`` is a whole video: its boxes reach the end of the file, and the index's probe finds it
    readable, with every frame its header declares."""
    try:
        if not _boxes_reach_file_end(dst):
            return False
        probe_video(dst)
    except (BadVideoError, OSError):
        return False
    return True


def current_source(src: str, dst: str, recorded: tuple[int, int] | None) -> tuple[int, int] | None:
    """The ``(size, mtime_ns)`` of ``src`` when ``dst`` exists, is not empty and was written from ``src`` as it is
    now, else None. The size and mtime ``recorded`` for it (the tree's line) say so when they are the source's (any
    difference: changed, either way). Without that line, or with another source's (a run killed after the output got
    its name but before its line: a first encode, or one again of a changed source), the source noted in the output
    says so (:func:`noted_source`) if the output is whole (:func:`output_is_whole`); for an output without a note
    (written before notes were kept) and without a line, a source not newer than it, again if it is whole. An empty
    output is what a machine that went down could leave of a file renamed before its data reached the disk (outputs
    written before they were synced): it was skipped as done on every rerun, the video lost to the lists."""
    try:
        out = os.stat(dst)
        if out.st_size == 0:
            return None
        st = os.stat(src)
    except FileNotFoundError:  # no output yet (or a source gone since the plan: its encode reports that)
        return None
    now = (st.st_size, st.st_mtime_ns)
    if recorded == now:
        return now
    noted = noted_source(dst)
    if noted is not None:
        current = noted == now
    else:
        current = recorded is None and out.st_mtime_ns >= st.st_mtime_ns
    return now if current and output_is_whole(dst) else None


def output_is_current(src: str, dst: str, recorded: tuple[int, int] | None) -> bool:
    """Whether ``dst`` is done and still its source's (:func:`current_source`)."""
    return current_source(src, dst, recorded) is not None


def source_changed(src: str, dst: str, recorded: tuple[int, int] | None) -> bool:
    """Whether ``dst``, an output not :func:`current_source`'s, is there (not empty) but of another source than
    ``src`` as it is now: by the source it notes, else by its line ``recorded``, else (neither) by a source newer
    than it. False for one of the same source that is not whole (cut short), which is encoded again all the same."""
    try:
        out = os.stat(dst)
        st = os.stat(src)
    except FileNotFoundError:
        return False
    if out.st_size == 0:
        return False
    now = (st.st_size, st.st_mtime_ns)
    noted = noted_source(dst)
    if noted is not None:
        return noted != now
    if recorded is not None:
        return recorded != now
    return out.st_mtime_ns < st.st_mtime_ns
