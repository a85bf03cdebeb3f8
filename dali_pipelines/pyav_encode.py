"""Encoding videos with PyAV: frames (numpy, RGB) to a file with a given codec, rate and keyframe interval.

The project's video I/O is four modules: ``pyav_open`` opens a video, ``pyav_probe`` probes, ``pyav_io`` decodes,
this one encodes (the synthetic datasets of the demo, tests and benchmarks are written with it). No DALI import here.
"""

from __future__ import annotations

import os
import struct
import tempfile
from fractions import Fraction
from typing import Any

import av
import numpy as np

__all__ = ["CODECS", "missing_encoder", "write_video", "cut_with_edit_list", "start_inside_gop", "write_size_change"]

# codec name -> (FFmpeg encoder, file extension, pixel format)
CODECS: dict[str, tuple[str, str, str]] = {
    "vp9": ("libvpx-vp9", ".webm", "yuv420p"),
    "vp8": ("libvpx", ".webm", "yuv420p"),
    "h264": ("libx264", ".mp4", "yuv420p"),
    "mpeg4": ("mpeg4", ".mp4", "yuv420p"),
    "mjpeg": ("mjpeg", ".avi", "yuvj420p"),  # full-range 4:2:0, the pixel format FFmpeg's MJPEG encoder wants
}

# Per-codec encoder options: fast settings for small test clips at good quality.
_ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    # realtime + cpu-used 8 is libvpx's fastest mode; crf with b:v 0 is constant quality; lag 0 = no alt-ref frames.
    "vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b:v": "0", "row-mt": "1", "lag-in-frames": "0"},
    "vp8": {"deadline": "realtime", "cpu-used": "8", "crf": "8", "b:v": "4M", "lag-in-frames": "0"},
    # The same frames must give the same bytes (datasets, the demo's accuracy). x264's lookahead thread (on even with
    # threads=1) made concurrent encodes differ (up to 4 files among 8), and its macroblock-tree rate control made
    # repeated encodes in one process differ (3 files in 15 for one clip; 1 with mbtree=0, or asm=0, or no B-frames).
    "h264": {"preset": "veryfast", "crf": "20", "x264-params": "sync-lookahead=0:mbtree=0"},
    "mpeg4": {"qmin": "2", "qmax": "4"},
    "mjpeg": {"qmin": "2", "qmax": "4"},
}

# MP4/MOV muxer options by codec: the index at the front (readable while streaming, fewer seeks). Other containers
# (a raw .h264 stream, .avi, .mkv) take none: FFmpeg printed "Some options were not used" for each file.
_CONTAINER_OPTIONS: dict[str, dict[str, str]] = {
    "h264": {"movflags": "+faststart"},
    "mpeg4": {"movflags": "+faststart"},
}
_MP4_FAMILY = (".mp4", ".mov", ".m4v")


def _encoder_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpegError depending on the build
        return False


def missing_encoder(codec: str) -> str | None:
    """Why this PyAV cannot encode ``codec`` (a key of ``CODECS``), naming the codecs it can; None when it can."""
    encoder = CODECS[codec][0]
    if _encoder_available(encoder):
        return None
    have = [c for c, (enc, _, _) in CODECS.items() if _encoder_available(enc)]
    return (f"the FFmpeg inside PyAV {av.__version__} has no {encoder!r} encoder for codec {codec!r}; "
            f"choose one it has: {', '.join(have) or 'none'}")


def _rate(fps: float | int | Fraction) -> Fraction:
    rate = Fraction(fps).limit_denominator(1001)  # 29.97 -> 2997/100, 30000/1001 stays exact
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def write_video(path: str, frames: np.ndarray, codec: str = "vp9", fps: float | int | Fraction = 25,
                gop: int | None = None, **opts: Any) -> None:
    """Encode RGB frames to a constant-frame-rate video file.

    Args:
        path: output file; the container is chosen from its extension (``CODECS[codec][1]`` is the natural one).
        frames: uint8 ``(T, H, W, 3)`` RGB; H and W must be even for the 4:2:0 codecs.
        codec: ``vp9`` | ``vp8`` | ``h264`` | ``mpeg4`` | ``mjpeg``.
        fps: constant frame rate (frame ``i`` gets timestamp ``i / fps``).
        gop: keyframe interval in frames (exact for h264/vp8/vp9: scene-cut keyframes are disabled); None or 0 =
            the encoder's default.
        **opts: ``bframes=<int>`` (max B-frames; ``0`` = none), ``threads=<int>`` (encoder threads, default 1, since
            datasets are encoded clip-parallel), and any other FFmpeg encoder option (stringified), overriding the
            defaults (e.g. ``crf=18``, ``preset='medium'``).

    Raises:
        ValueError: unknown codec or bad frames (the message names the file).
        RuntimeError: the encoder is not in this FFmpeg build (the message lists the codecs that are).
    """
    if codec not in CODECS:
        raise ValueError(f"{path}: unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    encoder, _, pix_fmt = CODECS[codec]
    missing = missing_encoder(codec)
    if missing:
        raise RuntimeError(f"{path}: {missing}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"{path}: frames must be a non-empty uint8 (T, H, W, 3) array, got "
                         f"{frames.dtype} {frames.shape}")
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"{path}: {codec} with {pix_fmt} needs an even frame size, got {w}x{h}")
    rate = _rate(fps)
    bframes = opts.pop("bframes", None)
    threads = int(opts.pop("threads", 1))
    options = dict(_ENCODER_OPTIONS[codec])
    gop = gop or None  # 0 means "encoder default", as on command lines
    if gop is not None:
        if gop < 1:
            raise ValueError(f"{path}: gop must be >= 1, got {gop}")
        if codec == "h264":
            options.update({"keyint_min": str(gop), "sc_threshold": "0"})  # fixed GOP, no scene-cut keyframes
        elif codec in ("vp8", "vp9"):
            options.update({"keyint_min": str(gop)})
    options.update({k: str(v) for k, v in opts.items()})

    # bitexact: no random segment/track UIDs or version strings, so the same frames give the same bytes.
    muxer = _CONTAINER_OPTIONS.get(codec, {}) if os.path.splitext(path)[1].lower() in _MP4_FAMILY else {}
    container = av.open(path, mode="w", options={"fflags": "+bitexact", **muxer})
    try:
        stream = container.add_stream(encoder, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.time_base = Fraction(1) / rate  # pts counts frames: constant frame rate by construction
        stream.codec_context.thread_count = threads
        if gop is not None:
            stream.codec_context.gop_size = gop
        if bframes is not None:
            stream.codec_context.max_b_frames = int(bframes)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush delayed frames
    finally:
        container.close()


# ----------------------------------------------------------------------------------------------------------------
# Files cut without re-encoding, as found in the wild (tests, and the NVDEC parity benchmark's numbering rows)


def cut_with_edit_list(src: str, dst: str, skip: int, fps: int = 25) -> None:
    """Copy the MP4 file ``src`` (one track, one edit, as ``write_video`` writes it at ``fps``) to ``dst`` with its
    edit list starting ``skip`` frames later: the samples stay in the file, the edit hides the first ``skip`` frames,
    as a cut without re-encoding writes it (``ffmpeg -ss T -c copy``, a phone's trim)."""
    with open(src, "rb") as f:
        data = bytearray(f.read())
    at = data.find(b"elst")
    if not (at > 0 and data[at + 4] == 0 and struct.unpack(">I", data[at + 8:at + 12])[0] == 1):
        raise ValueError(f"{src}: expected one version-0 edit")
    mdhd, mvhd = data.find(b"mdhd"), data.find(b"mvhd")
    if not data[mdhd + 4] == data[mvhd + 4] == 0:
        raise ValueError(f"{src}: expected version-0 mdhd and mvhd boxes")
    track_scale = struct.unpack(">I", data[mdhd + 16:mdhd + 20])[0]
    movie_scale = struct.unpack(">I", data[mvhd + 16:mvhd + 20])[0]
    duration, media_time = struct.unpack(">Ii", data[at + 12:at + 20])
    data[at + 12:at + 20] = struct.pack(">Ii", duration - skip * movie_scale // fps,
                                        media_time + skip * track_scale // fps)
    with open(dst, "wb") as f:
        f.write(bytes(data))


def start_inside_gop(src: str, dst: str, skip: int) -> None:
    """Copy the video stream of ``src`` to ``dst`` without its first ``skip`` packets (no re-encoding): a stream that
    starts inside a GOP, whose first pictures lack their references (a cut at the wrong packet, a live capture)."""
    with av.open(src) as inp, av.open(dst, "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        packets = [p for p in inp.demux(stream) if p.size][skip:]
        shift = min(p.pts for p in packets)
        for p in packets:
            p.pts -= shift
            p.dts -= shift
            p.stream = copy
            out.mux(p)


def _annexb(path: str, frames: np.ndarray) -> None:
    with av.open(path, "w", format="h264") as c:
        s = c.add_stream("libx264", rate=25, options={"preset": "veryfast", "bframes": "0"})
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))


def write_size_change(path: str, first: np.ndarray, then: np.ndarray) -> None:
    """An H.264 MKV at ``path`` whose picture size changes within the stream: the RGB frames ``first``, then ``then``
    (another size; a new SPS, as a screen recording or a stream switched between renditions has), its header giving
    the first size."""
    with tempfile.TemporaryDirectory() as tmp:
        a, b, joined = (os.path.join(tmp, n) for n in ("a.h264", "b.h264", "joined.h264"))
        _annexb(a, first)
        _annexb(b, then)
        with open(joined, "wb") as out, open(a, "rb") as fa, open(b, "rb") as fb:
            out.write(fa.read() + fb.read())
        with av.open(a) as head, av.open(joined) as inp, av.open(path, "w") as out:
            stream = out.add_stream_from_template(head.streams.video[0])
            for n, p in enumerate(p for p in inp.demux(video=0) if p.size):
                p.pts = p.dts = n
                p.time_base = Fraction(1, 25)
                p.stream = stream
                out.mux(p)
