"""A :class:`pyav_io.VideoReader` whose every request has a time limit (``DATA.VIDEO_TIMEOUT_S``).

The windows of ``tools/extract_features.py`` decode a video batch after batch through one reader in the tool's own
process: a read that never returns (a file system that stopped answering) or a decode that does not end hung the
whole extraction, where the loaders' decodes (``feeder.Feeder.wait_limit_s``) and every probe have the limit. Here
the reader lives in a thread of its own, and each request (opening the file and demuxing it for the frame times,
each batch's frames) is waited for at most the limit, so that a long video is not cut short for its length; past it
the video is given up with :class:`DecodeOverdue`. As for the feeder's reads, a thread cannot be stopped: one stuck
in the kernel or the decoder is left behind, a daemon that does not hold up the end of the process. The frames come
back as the reader made them (no copy between processes), and a test's patches of the reader still apply.

What else every wait on one video under the limit uses lives here too: :func:`run_within` (one call in a thread of
its own, as the loader's lone re-decodes after a DALI graph failed), the wordings :func:`overdue_reason` and
:func:`overdue_in_a_row`, and :class:`OverdueStreak`, the count of videos in a row past the limit that the feeder
and the loader's re-decodes share, and the windows count theirs with.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from evautil.workers import MAX_OVERDUE_IN_A_ROW, DaemonThreadPool, ResultOverdue, result_unless_a_worker_dies

from .pyav_io import MAX_HELD_PACKET_BYTES, VideoReader
from .pyav_open import BadVideoError, VideoSource

__all__ = ["DecodeOverdue", "TimedVideoReader", "overdue_reason", "overdue_in_a_row", "OverdueStreak", "run_within"]


def overdue_reason(work: str, limit_s: float) -> str:
    """Why a video whose ``work`` ('read', 'decode') ran past DATA.VIDEO_TIMEOUT_S is left out (the feeder's,
    the windows' words)."""
    return (f"did not {work} within DATA.VIDEO_TIMEOUT_S = {limit_s:g} s (a file system that stopped answering, "
            "or a decoder that does not end)")


def overdue_in_a_row(count: int, work: str, limit_s: float, last: str) -> str:
    """The error that ends a run when ``count`` videos in a row ran past the limit: not the videos, the storage."""
    return (f"{count} videos in a row did not {work} within DATA.VIDEO_TIMEOUT_S = {limit_s:g} s (the last: "
            f"{last}): the storage they are on, or the decoding itself, does not answer; check it (a larger "
            "DATA.VIDEO_TIMEOUT_S waits longer, 0 for ever)")


class OverdueStreak:
    """How many videos in a row ran past DATA.VIDEO_TIMEOUT_S (``limit_s``); :data:`MAX_OVERDUE_IN_A_ROW` of them
    point at the storage or the decoding, not at the videos, and end the run. The loader keeps one for the feeders
    it builds and its own re-decodes, so that a rebuild of the graphs does not start the count again."""

    def __init__(self, limit_s: float):
        self.limit_s = float(limit_s)
        self.count = 0

    def answered(self) -> None:
        """A video's read or decode gave its result in time: the storage answers."""
        self.count = 0

    def left_out(self, work: str, path: str) -> str:
        """One more video (``path``) whose ``work`` ('read', 'decode') ran past the limit: why it is left out of
        this run (the next run tries it again); RuntimeError instead when it makes MAX_OVERDUE_IN_A_ROW in a row."""
        self.count += 1
        if self.count >= MAX_OVERDUE_IN_A_ROW:
            raise RuntimeError(overdue_in_a_row(self.count, work, self.limit_s, path))
        return f"{overdue_reason(work, self.limit_s)}; left out of this run only, the next run tries it again"


def run_within(limit_s: float, fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a thread of its own, waited for at most ``limit_s`` seconds (0: for ever): its
    result, or its exception; ResultOverdue past the limit. The thread cannot be stopped: one that never ends is
    left behind, a daemon that does not hold up the end of the process."""
    pool = DaemonThreadPool(1, "video-decode")
    try:
        return result_unless_a_worker_dies(pool, pool.submit(fn, *args, **kwargs), limit_s)
    finally:
        pool.shutdown(wait=False)


class DecodeOverdue(BadVideoError):
    """A request of a :class:`TimedVideoReader` gave no result within its limit: a file system that stopped
    answering or a decoder that does not end, which may pass (a later run tries the video again)."""


class TimedVideoReader:
    """:class:`VideoReader` of ``path`` (with its ``max_held_bytes``) opened, asked and closed in a thread of its
    own; each request waits at most ``limit_s`` seconds (0: for ever). A context manager, as the reader is.

    Raises (at construction and from each request): DecodeOverdue past the limit, after which the reader is given up
    (further requests raise it again); else the reader's own errors.
    """

    def __init__(self, path: VideoSource, limit_s: float, max_held_bytes: int = MAX_HELD_PACKET_BYTES):
        self.limit_s = float(limit_s)
        self._pool = DaemonThreadPool(1, "video-decode")
        self._reader: VideoReader | None = None
        self._overdue = False
        try:
            self._reader = self._wait(VideoReader, path, max_held_bytes=max_held_bytes)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "TimedVideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        if self._overdue:
            raise DecodeOverdue(self._overdue_reason())
        fut = self._pool.submit(fn, *args, **kwargs)
        try:
            return result_unless_a_worker_dies(self._pool, fut, self.limit_s)
        except ResultOverdue:
            self._overdue = True  # the stuck thread keeps the reader: it cannot be closed under it
            self._reader = None
            raise DecodeOverdue(self._overdue_reason()) from None

    def _overdue_reason(self) -> str:
        return f"{overdue_reason('decode', self.limit_s)}; the next run tries it again"

    def frame_times(self) -> np.ndarray | None:
        """:meth:`VideoReader.frame_times`, within the limit."""
        return self._wait(self._reader.frame_times)  # type: ignore[union-attr]

    def frames(self, indices: Iterable[int], then: int | None = None) -> np.ndarray:
        """:meth:`VideoReader.frames`, within the limit."""
        return self._wait(self._reader.frames, indices, then=then)  # type: ignore[union-attr]

    def close(self) -> None:
        """Close the reader in its thread, after the request it may still be running (a Ctrl-C while waiting), and
        let the thread end; nothing here waits for it."""
        reader, self._reader = self._reader, None
        if reader is not None:
            self._pool.submit(reader.close)
        self._pool.shutdown(wait=False)
