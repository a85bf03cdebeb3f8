"""PyAV (FFmpeg) video reading for the CPU decode route, the dataset index, tests and benchmarks.

Frame numbering everywhere is the presentation order of the decoded stream: frame ``i`` is the ``i``-th frame the
decoder emits. That is the numbering of DALI's ``fn.decoders.video(frames=...)``, so frame indices computed for one
decode route select the same pictures on the other.

No DALI import here: this module must work on machines (and in processes) without DALI.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Iterable, Union

import av
import numpy as np

__all__ = ["BadVideoError", "VideoSource", "decode_frames", "count_frames", "count_packets", "StreamProbe",
           "probe_stream"]

# A file path, or the encoded bytes of a whole file (what DALI's readers.file yields), or an open binary file.
VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]


class BadVideoError(RuntimeError):
    """A video cannot be read as needed: missing, empty, not a container, no video stream, truncated, corrupt...

    The message names the file (when known) and the reason.
    """


def _name(src: VideoSource) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    return getattr(src, "name", "<in-memory video>")


def _open(src: VideoSource) -> av.container.InputContainer:
    """Open ``src`` for reading; every failure becomes a BadVideoError naming the file."""
    name = _name(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(src)
    elif isinstance(src, (str, os.PathLike)) and not os.path.exists(src):
        raise BadVideoError(f"{name}: file does not exist")
    try:
        return av.open(src if not isinstance(src, os.PathLike) else os.fspath(src), mode="r")
    except av.error.FFmpegError as e:
        raise BadVideoError(f"{name}: not a readable video container ({_ffmpeg_msg(e)})") from e


def _ffmpeg_msg(e: BaseException) -> str:
    # FFmpegError's str() repeats the file name; the strerror part is what is informative.
    return getattr(e, "strerror", None) or str(e)


def _video_stream(container: av.container.InputContainer, name: str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise BadVideoError(f"{name}: no video stream (streams: {', '.join(kinds)})")
    return container.streams.video[0]


def decode_frames(path: VideoSource, indices: Iterable[int], threads: int = 0) -> np.ndarray:
    """Decode the frames ``indices`` of a video into RGB.

    Args:
        path: file path, or the encoded bytes of a whole file.
        indices: presentation-order frame numbers; any order, duplicates allowed.
        threads: decoder threads; 0 lets FFmpeg choose (frame + slice threading, ``thread_type='AUTO'``).

    Returns:
        uint8 array ``(len(indices), H, W, 3)``, RGB, row ``k`` is frame ``indices[k]``.

    Raises:
        ValueError: a negative index.
        BadVideoError: the file cannot be opened/decoded, or an index is at or beyond the number of frames that
            could be decoded (the message names the file and the count).
    """
    idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices, dtype=np.int64).reshape(-1)
    if idx.size and idx.min() < 0:
        raise ValueError(f"{_name(path)}: negative frame index {int(idx.min())} requested")
    name = _name(path)
    container = _open(path)
    try:
        stream = _video_stream(container, name)
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        if idx.size == 0:
            return np.zeros((0, stream.height, stream.width, 3), np.uint8)
        wanted = set(idx.tolist())
        last = int(idx.max())
        decoded: dict[int, np.ndarray] = {}
        n = 0
        try:
            for frame in container.decode(stream):
                if n in wanted:
                    # RGB conversion (swscale) costs about as much as decoding; do it only for requested frames.
                    decoded[n] = frame.to_ndarray(format="rgb24")
                n += 1
                if n > last:  # decode forward only as far as the largest index
                    break
        except av.error.FFmpegError as e:
            raise BadVideoError(f"{name}: decode error after {n} frames ({_ffmpeg_msg(e)})") from e
        if n <= last:
            raise BadVideoError(f"{name}: frame {last} requested but only {n} frames could be decoded")
    finally:
        container.close()
    return np.stack([decoded[i] for i in idx.tolist()])


def count_frames(path: VideoSource, threads: int = 0) -> int:
    """Number of frames a full decode of the first video stream yields (decode only, no RGB conversion).

    Raises:
        BadVideoError: unreadable file, no video stream, or a decode error (naming the file and where).
    """
    name = _name(path)
    container = _open(path)
    n = 0
    try:
        stream = _video_stream(container, name)
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        for _ in container.decode(stream):
            n += 1
    except av.error.FFmpegError as e:
        raise BadVideoError(f"{name}: decode error after {n} frames ({_ffmpeg_msg(e)})") from e
    finally:
        container.close()
    return n


def count_packets(path: VideoSource) -> int:
    """Number of demuxed packets carrying data in the first video stream (no decoding).

    For the constant-frame-rate clips of action datasets this equals the number of decodable frames; it is what
    the dataset index stores (WebM/Matroska headers carry no frame count, so it has to be counted).
    """
    return probe_stream(path).packets


@dataclass(frozen=True)
class StreamProbe:
    """Raw facts about a video's first video stream, gathered by :func:`probe_stream`.

    ``declared_frames`` is the frame count the container header states (MP4/AVI ``nb_frames``), else one derived
    from the declared duration and frame rate, else 0 (unknown). ``decoded_frames`` is -1 unless a full decode
    was requested. ``error`` is a demux/decode error message seen after the first frame ('' if none).
    """

    codec: str
    width: int
    height: int
    fps: float
    packets: int
    declared_frames: int
    declared_exact: bool  # declared_frames comes from an exact header count (not from a duration estimate)
    first_frame_ok: bool
    decoded_frames: int
    error: str


def _fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def _declared_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                     fps: float) -> tuple[int, bool]:
    if stream.frames > 0:
        return int(stream.frames), True
    duration_s = 0.0
    if stream.duration and stream.time_base:
        duration_s = float(stream.duration * Fraction(stream.time_base))
    elif container.duration:
        duration_s = container.duration / av.time_base  # microseconds
    if duration_s > 0 and fps > 0:
        return int(round(duration_s * fps)), False
    return 0, False


def probe_stream(path: VideoSource, full_decode: bool = False) -> StreamProbe:
    """Demux the whole first video stream, count its data packets and check that the first frame decodes.

    With ``full_decode`` every packet is decoded and the decoded-frame count is recorded as well.

    Raises:
        BadVideoError: the file is missing, not a container, or has no video stream. Problems *inside* the stream
            (demux/decode errors, no frames) are reported through the returned fields so the caller can word them.
    """
    name = _name(path)
    container = _open(path)
    try:
        stream = _video_stream(container, name)
        ctx = stream.codec_context
        codec = ctx.name if ctx is not None else (stream.codec.name if stream.codec else "unknown")
        fps = _fps(stream)
        declared, exact = _declared_frames(container, stream, fps)
        packets, decoded, first_ok, error = 0, 0, False, ""
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet at the end of the stream carries no data
                    continue
                packets += 1
                if full_decode or not first_ok:
                    try:
                        frames = stream.decode(packet)
                    except av.error.FFmpegError as e:
                        error = error or f"decode error at packet {packets - 1} ({_ffmpeg_msg(e)})"
                        continue
                    decoded += len(frames)
                    first_ok = first_ok or decoded > 0
            if full_decode or not first_ok:
                try:  # drain the decoder's delayed frames
                    frames = stream.decode(None)
                    decoded += len(frames)
                    first_ok = first_ok or decoded > 0
                except av.error.FFmpegError as e:
                    error = error or f"decode error while flushing ({_ffmpeg_msg(e)})"
        except av.error.FFmpegError as e:
            error = error or f"demux error after {packets} packets ({_ffmpeg_msg(e)})"
        return StreamProbe(codec=codec, width=int(stream.width), height=int(stream.height), fps=fps,
                           packets=packets, declared_frames=declared, declared_exact=exact, first_frame_ok=first_ok,
                           decoded_frames=decoded if full_decode else -1, error=error)
    finally:
        container.close()
