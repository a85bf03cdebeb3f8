"""Cut an encoded VP8/VP9/MJPEG video down to the packets that decoding a set of frames needs.

Why: DALI 2.4's CPU video decoder (``fn.decoders.video(device='cpu')``) builds no keyframe index for in-memory
inputs (its ``build_index`` argument does not reach the CPU decoder), so it never seeks: to return frame ``f`` it
decodes every frame from 0 up to ``f``. A 16-frame TSN draw from a 250-frame clip therefore costs about as much as
decoding the whole clip, whatever the GOP length. Measured on 340x256 VP9 clips with a keyframe every 16 frames
(one thread): frames ``[10]`` 6 ms, ``[120]`` 50 ms, ``[240]`` 99 ms per clip.

The fix lives outside the decoder: on the host we demux the file (no decoding), keep for every requested frame
the packets from its preceding keyframe up to it, and write just those packets into a minimal IVF stream (a 32-byte
header and a 12-byte header per packet; DALI's FFmpeg reads it). Every run of kept packets starts at a keyframe,
which resets all of the decoder's references, so each kept frame decodes exactly as in the full file; the frame
indices are renumbered to positions in the cut stream. DALI then decodes only the "GOP work": within every GOP
that holds a requested frame, the frames from the keyframe to the last requested one.

This relies on what DALI's frame numbering already assumes for these codecs: one demuxed packet per displayed
frame, in presentation order (no B-frame reordering; VP9 hidden frames ride in superframes). Streams that do not
look like that (timestamps not increasing, no keyframe at packet 0) are left whole.
"""

from __future__ import annotations

import io
import struct

import numpy as np

from .gop_plan import clean_cuts, plan_runs

__all__ = ["PACKABLE_CODECS", "pack_for_frames"]

# FFmpeg codec name -> IVF fourcc. MJPEG is all keyframes, so only the requested frames are kept.
PACKABLE_CODECS = {"vp9": b"VP90", "vp8": b"VP80", "mjpeg": b"MJPG"}

_IVF_HEADER = struct.Struct("<4sHH4sHHIIII")  # signature, version, header size, fourcc, w, h, rate, scale, n, unused
_IVF_FRAME = struct.Struct("<IQ")  # payload size, timestamp


def _ivf(fourcc: bytes, width: int, height: int, packets: list[bytes]) -> np.ndarray:
    parts = [_IVF_HEADER.pack(b"DKIF", 0, 32, fourcc, width, height, 25, 1, len(packets), 0)]
    for i, p in enumerate(packets):
        parts.append(_IVF_FRAME.pack(len(p), i))  # constant frame rate: timestamps 0, 1, 2, ...
        parts.append(p)
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def pack_for_frames(data: np.ndarray, frames: np.ndarray, min_saving: float = 0.1
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """The packets of ``data`` (a whole encoded file) that decoding ``frames`` needs, as an IVF stream.

    Args:
        data: uint8 bytes of a whole video file.
        frames: frame indices (presentation order) to be decoded; any order, duplicates allowed.
        min_saving: return None unless the cut stream is at least this fraction shorter than what a decoder
            without seeking would decode (frames 0 .. max(frames)).

    Returns:
        ``(ivf_bytes, new_frames)``, where ``new_frames[k]`` is the position of ``frames[k]`` in the cut stream,
        or None when the file should be decoded whole: a codec other than VP8/VP9/MJPEG, a stream that cannot be
        demuxed or does not have one increasing-timestamp packet per frame, an index past the last packet (the decoder
        then reports the short video), or too little to save. None never hides an error: the caller decodes the original
        bytes, whose decoder then reports what is wrong.
    """
    import av  # deferred: PyAV is only needed on the CPU route

    frames = np.asarray(frames, dtype=np.int64).reshape(-1)
    if frames.size == 0 or frames.min() < 0:
        return None
    try:
        with av.open(io.BytesIO(memoryview(data)), mode="r") as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            fourcc = PACKABLE_CODECS.get(codec)
            if fourcc is None:
                return None
            width, height = stream.codec_context.width, stream.codec_context.height
            last_wanted = int(frames.max())
            payloads, keys, stamps = [], [], []
            for pkt in container.demux(stream):
                if pkt.size == 0:  # flush marker, not a frame
                    continue
                payloads.append(bytes(pkt))
                keys.append(bool(pkt.is_keyframe))
                stamps.append(pkt.pts if pkt.pts is not None else pkt.dts)
                if len(payloads) > last_wanted:  # nothing after the last requested frame is needed
                    break
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    n = len(payloads)
    if n <= last_wanted or not keys[0] or any(s is None for s in stamps) or np.any(np.diff(np.asarray(stamps)) <= 0):
        return None
    # The same plan as the PyAV route's: every requested frame needs the packets from the keyframe that opens
    # its GOP up to it. Without reordering, frame numbers are packet positions.
    ranks = list(range(n))
    cuts = clean_cuts(codec, None, keys, None, ranks)
    runs = plan_runs(cuts, ranks, ranks, np.unique(frames).tolist(), merge_gap=0)
    mask = np.zeros(n, dtype=bool)
    for first, last, _, _ in runs:
        mask[first:last + 1] = True
    kept = int(mask.sum())
    if kept > (1.0 - min_saving) * (last_wanted + 1):
        return None
    new_pos = np.cumsum(mask) - 1
    ivf = _ivf(fourcc, width, height, [payloads[i] for i in np.nonzero(mask)[0]])
    return ivf, new_pos[frames].astype(np.int32)
