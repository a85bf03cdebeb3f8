"""The opening of a video with PyAV (FFmpeg) and a video's errors, which decoding (``pyav_io``) and probing
(``pyav_probe``) both use: :class:`BadVideoError` (a video that cannot be read as needed, naming the file),
:class:`VideoChangedError` (a file that changed since the index probed it) and the reason a quarantine records for
either (:func:`failure_reason`).

No DALI import here: this module must work on machines (and in processes) without DALI.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO, Union

import av

__all__ = ["VideoSource", "BadVideoError", "failure_reason", "VideoChangedError", "check_unchanged", "source_name",
           "open_video", "ffmpeg_message", "first_video_stream"]

# A file path, or the encoded bytes of a whole file (what DALI's readers.file yields), or an open binary file.
VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]


class BadVideoError(RuntimeError):
    """A video cannot be read as needed: missing, empty, not a container, no video stream, truncated, corrupt...

    The message names the file (when known) and the reason.
    """


def failure_reason(error: BaseException, path: str) -> str:
    """``error`` as the reason a quarantine records for the video ``path``: its type and message, less the path,
    which the quarantine names beside the reason: the ``<path>: `` a :class:`BadVideoError`'s message begins with,
    and the ``: '<path>'`` an OSError's (and PyAV's errors') puts after its reason, maybe followed by more
    (``[Errno 13] Permission denied: '/v/a.mp4'``, ``...: '/v/a.mp4'; last error log: ...``)."""
    text = str(error)
    if text.startswith(f"{path}: "):
        text = text[len(path) + 2:]
    named = getattr(error, "filename", None)
    for name in {path, *([named] if isinstance(named, str) else [])}:
        if os.path.abspath(name) == os.path.abspath(path):  # the file itself under another spelling
            text = text.replace(f": {name!r}", "")
    return f"{type(error).__name__}: {text}"


class VideoChangedError(BadVideoError):
    """A video file is not the one the index describes: its size or modification time changed since it was probed
    (replaced, truncated or rewritten), so the index's frame count cannot be trusted for it."""


def check_unchanged(path: str, size: int, mtime_ns: int, st: os.stat_result | None = None) -> None:
    """Raise :class:`VideoChangedError` (naming the file) unless ``path`` (or its stat result ``st``) still has the
    ``size`` and ``mtime_ns`` recorded when it was indexed. Nothing is checked when both are 0 (not recorded)."""
    if not size and not mtime_ns:
        return
    if st is None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise BadVideoError(f"{path}: file does not exist (it was there when indexed)") from None
    if st.st_size != size or st.st_mtime_ns != mtime_ns:
        raise VideoChangedError(
            f"{path}: changed since it was indexed (size {size} -> {st.st_size} bytes, modification time "
            f"{'changed' if st.st_mtime_ns != mtime_ns else 'unchanged'}); left out of this run, probed again when "
            "the index is next built")


def source_name(src: VideoSource) -> str:
    """The name errors give ``src``: its path, an open file's name, else ``<in-memory video>``."""
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    return getattr(src, "name", "<in-memory video>")


def open_video(src: VideoSource, name: str = "") -> av.container.InputContainer:
    """Open ``src`` for reading; every failure becomes a BadVideoError naming the file (``name``, else its own)."""
    name = name or source_name(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(src)
    elif isinstance(src, (str, os.PathLike)) and not os.path.exists(src):
        raise BadVideoError(f"{name}: file does not exist")
    try:
        return av.open(src if not isinstance(src, os.PathLike) else os.fspath(src), mode="r")
    except av.error.FFmpegError as e:
        raise BadVideoError(f"{name}: not a readable video container ({ffmpeg_message(e)})") from e


def ffmpeg_message(e: BaseException) -> str:
    """What an FFmpeg error says: its str() repeats the file name; the strerror part is what is informative."""
    return getattr(e, "strerror", None) or str(e)


def first_video_stream(container: av.container.InputContainer, name: str) -> av.video.stream.VideoStream:
    """The first video stream of ``container``; a BadVideoError naming ``name`` (and the streams there are) if none."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise BadVideoError(f"{name}: no video stream (streams: {', '.join(kinds)})")
    return container.streams.video[0]
