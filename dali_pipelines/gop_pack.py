"""Cut an encoded video down to the packets that decoding a set of frames needs.

Why: DALI 2.4's video decoder (``fn.decoders.video``) builds no keyframe index for in-memory inputs (its
``build_index`` argument does not reach the decoder), so it never seeks: to return frame ``f`` it decodes every frame
from 0 up to ``f``. A 16-frame TSN draw from a 250-frame clip therefore costs about as much as decoding the whole
clip, whatever the GOP length. Measured for the CPU decoder on 340x256 VP9 clips with a keyframe every 16 frames (one
thread): frames ``[10]`` 6 ms, ``[120]`` 50 ms, ``[240]`` 99 ms per clip. DALI's sources suggest the same of its NVDEC
decoder; the parity benchmark's seek probe measures it on a GPU.

The fix lives outside the decoder: on the host we demux the file (no decoding), keep for every requested frame the
packets from the clean cut that opens its GOP (``gop_plan``) up to it, and write just those packets into a small
stream; the frame indices are renumbered to positions in the cut stream. Every run of kept packets starts at a
picture that resets all of the decoder's references, so each kept frame decodes exactly as in the full file, and the
decoder does only the "GOP work": within every GOP that holds a requested frame, the frames from its start to the
last requested one.

- VP8/VP9/MJPEG (:data:`PACKABLE_CODECS`, for DALI's CPU decoder): a minimal IVF stream (a 32-byte header and a
  12-byte header per packet). This relies on what DALI's frame numbering already assumes for these codecs: one
  demuxed packet per displayed frame, in presentation order (no reordering; VP9 hidden frames ride in superframes).
- H.264/HEVC (:data:`MP4_CODECS`, for NVDEC; ``DATA.NVDEC_PACK_GOPS``): the packets remuxed into MP4 with the
  stream's own parameters. B-frames are allowed: a run may hold frames past its last requested one (decoded before
  B-frames that are left out), so the new numbering counts every displayed frame of the kept packets, in
  presentation order, and the timestamps are rewritten to that order (decode timestamps consecutive, presentation
  timestamps shifted by the reorder delay).

Streams that do not look as expected (timestamps missing or repeated, no clean cut at packet 0, packets an edit list
discards) are left whole.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import numpy as np

from .gop_plan import NAL_CODECS, clean_cuts, plan_runs, presentation_order

__all__ = ["PACKABLE_CODECS", "MP4_CODECS", "pack_for_frames"]

# FFmpeg codec name -> IVF fourcc. MJPEG is all keyframes, so only the requested frames are kept.
PACKABLE_CODECS = {"vp9": b"VP90", "vp8": b"VP80", "mjpeg": b"MJPG"}
# Codecs cut into MP4 (their clean cuts are found from the packets' NAL units).
MP4_CODECS = frozenset({"h264", "hevc"}) & NAL_CODECS

_IVF_HEADER = struct.Struct("<4sHH4sHHIIII")  # signature, version, header size, fourcc, w, h, rate, scale, n, unused
_IVF_FRAME = struct.Struct("<IQ")  # payload size, timestamp


def _ivf(fourcc: bytes, width: int, height: int, packets: list[bytes]) -> np.ndarray:
    parts = [_IVF_HEADER.pack(b"DKIF", 0, 32, fourcc, width, height, 25, 1, len(packets), 0)]
    for i, p in enumerate(packets):
        parts.append(_IVF_FRAME.pack(len(p), i))  # constant frame rate: timestamps 0, 1, 2, ...
        parts.append(p)
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def _kept_packets(cuts: list[int], ranks: list[int], order: list[int], frames: np.ndarray) -> np.ndarray:
    """Mask of the packets the planned runs feed the decoder (the same plan as the PyAV route's)."""
    mask = np.zeros(len(ranks), dtype=bool)
    for first, last, _, _ in plan_runs(cuts, ranks, order, np.unique(frames).tolist(), merge_gap=0):
        mask[first:last + 1] = True
    return mask


def _cut_ivf(stream, packets: list, frames: np.ndarray, min_saving: float) -> tuple[np.ndarray, np.ndarray] | None:
    codec = stream.codec_context.name
    last_wanted = int(frames.max())
    stamps = [p.pts if p.pts is not None else p.dts for p in packets]
    n = len(packets)
    # Packets an edit list discards are decoded but not shown (PyAV's numbering skips them, so does DALI's CPU
    # decoder on the whole file: libavcodec drops them); the IVF stream would show them: such a file is decoded whole.
    if n <= last_wanted or not packets[0].is_keyframe or any(s is None for s in stamps) \
            or np.any(np.diff(np.asarray(stamps)) <= 0) or any(p.is_discard for p in packets):
        return None
    # Without reordering, frame numbers are packet positions.
    ranks = list(range(n))
    mask = _kept_packets(clean_cuts(codec, None, [p.is_keyframe for p in packets], None, ranks), ranks, ranks, frames)
    if mask.sum() > (1.0 - min_saving) * (last_wanted + 1):
        return None
    new_pos = np.cumsum(mask) - 1
    ivf = _ivf(PACKABLE_CODECS[codec], stream.codec_context.width, stream.codec_context.height,
               [bytes(packets[i]) for i in np.nonzero(mask)[0]])
    return ivf, new_pos[frames].astype(np.int32)


def _cut_mp4(stream, packets: list, frames: np.ndarray, min_saving: float) -> tuple[np.ndarray, np.ndarray] | None:
    import av

    ctx = stream.codec_context
    if any(p.pts is None or p.dts is None or p.is_discard for p in packets):
        return None
    numbered = presentation_order([p.pts for p in packets], [True] * len(packets))
    if numbered is None or int(frames.max()) >= len(numbered[0]):
        return None
    order, ranks = numbered
    cuts = clean_cuts(ctx.name, ctx.extradata, [p.is_keyframe for p in packets], [bytes(p) for p in packets], ranks)
    mask = _kept_packets(cuts, ranks, order, frames)
    kept = np.nonzero(mask)[0].tolist()
    whole = max(order[: int(frames.max()) + 1]) + 1  # packets a decode from frame 0 would feed
    if len(kept) > (1.0 - min_saving) * whole:
        return None
    # Runs follow each other in frame order (clean cuts), so the kept frames, sorted, are the cut stream's frames.
    position = {r: i for i, r in enumerate(sorted(ranks[d] for d in kept))}
    delay = max(0, max(q - position[ranks[d]] for q, d in enumerate(kept)))
    rate = stream.average_rate or Fraction(25)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        cut = out.add_stream_from_template(stream)
        for q, d in enumerate(kept):
            packet = packets[d]
            packet.stream = cut
            packet.time_base = 1 / Fraction(rate)
            packet.dts, packet.pts = q, position[ranks[d]] + delay
            out.mux(packet)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8), np.array([position[int(f)] for f in frames], np.int32)


def pack_for_frames(data: np.ndarray, frames: np.ndarray, min_saving: float = 0.1
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """The packets of ``data`` (a whole encoded file) that decoding ``frames`` needs, as an IVF (VP8/VP9/MJPEG) or
    MP4 (H.264/HEVC) stream.

    Args:
        data: uint8 bytes of a whole video file.
        frames: frame indices (presentation order) to be decoded; any order, duplicates allowed.
        min_saving: return None unless the cut stream is at least this fraction shorter than what a decoder
            without seeking would decode (frames 0 .. max(frames)).

    Returns:
        ``(cut_bytes, new_frames)``, where ``new_frames[k]`` is the position of ``frames[k]`` in the cut stream,
        or None when the file should be decoded whole: another codec, a stream that cannot be demuxed or does not
        look as expected (module docstring), an index past the last packet (the decoder then reports the short
        video), or too little to save. None never hides an error: the caller decodes the original bytes, whose
        decoder then reports what is wrong.
    """
    import av  # deferred: PyAV is only needed where files are cut

    frames = np.asarray(frames, dtype=np.int64).reshape(-1)
    if frames.size == 0 or frames.min() < 0:
        return None
    try:
        with av.open(io.BytesIO(memoryview(data)), mode="r") as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            if codec not in PACKABLE_CODECS and codec not in MP4_CODECS:
                return None
            # Without reordering (IVF codecs) nothing after the last requested frame is needed; with it, the run
            # that ends a GOP may reach past it, so the whole stream is demuxed (no decoding: cheap either way).
            limit = int(frames.max()) + 1 if codec in PACKABLE_CODECS else None
            packets = []
            for packet in container.demux(stream):
                if packet.size:  # the empty packet at the end is a flush marker
                    packets.append(packet)
                    if len(packets) == limit:
                        break
            if not packets:
                return None
            if codec in PACKABLE_CODECS:
                return _cut_ivf(stream, packets, frames, min_saving)
            return _cut_mp4(stream, packets, frames, min_saving)
    except (av.error.FFmpegError, OSError, ValueError):
        return None
