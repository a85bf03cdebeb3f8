"""The index's probe of one video (:func:`probe_video`): its facts as a ``VideoInfo``, or the short reason it is bad.

``pyav_probe.probe_stream`` reads what the demux and a decode say; this module judges it as the index does: a missing,
empty or undecodable file, a stream that stops short of what its container declares (:func:`_check_complete`), a
concealed damaged picture in a full decode. The index's workers run it for every listed video (``index._probe_job``),
and so does ``prepare_kinetics.py lists --check``. ``index`` re-exports :func:`probe_video`. No DALI import here.
"""

from __future__ import annotations

import os

from .video_table import NUMBERED_AS_INDEXED, VideoInfo
from .pyav_open import BadVideoError
from .pyav_probe import DURATION_SLACK, StreamProbe, probe_stream, reaches_duration

__all__ = ["probe_video"]


def probe_video(path: str, full_decode: bool = False) -> VideoInfo:
    """Probe one video: count its frames and check that it is readable.

    Without ``full_decode`` the frame count is the number of demuxed video packets carrying data (the count DALI's
    decoder sees) and only the first frame is decoded. With ``full_decode`` every frame is decoded and the decoded
    count is used, which also catches corruption in the middle of a stream: a decode error, or a picture the decoder
    flags as damaged and conceals (H.264/HEVC/MPEG-4 do; FFmpeg's VP8/VP9 decoders flag none).

    Raises:
        BadVideoError: with a short reason (no file name): missing file, zero-byte file, not a video container,
            no video stream, no frames, undecodable first frame, truncated, decode errors.
    """
    if not os.path.exists(path):
        raise BadVideoError("missing file")
    if not os.path.isfile(path):
        raise BadVideoError("not a regular file")
    st = os.stat(path)
    if st.st_size == 0:
        raise BadVideoError("zero-byte file")
    judge_concealment = full_decode  # asked for: the quick probe's own full decode below does not judge it
    p = _probe(path, full_decode)
    if p.leading_nonkey and not full_decode:
        # The stream starts inside a GOP (cut without re-encoding): the decoders drop the pictures before its first
        # keyframe, so only a decode tells how many frames come out.
        full_decode = True
        p = _probe(path, full_decode)
    if p.packets == 0:
        raise BadVideoError("no frames (the video stream has no packets)")
    if not p.first_frame_ok:
        raise BadVideoError("first frame cannot be decoded" + (f" ({p.error})" if p.error else ""))
    if p.error:
        raise BadVideoError(f"corrupt or truncated: {p.error}")
    if p.width <= 0 or p.height <= 0:
        raise BadVideoError(f"invalid frame size {p.width}x{p.height}")
    _check_complete(p)
    # FFmpeg conceals a damaged picture and goes on: its frame is not what was recorded. Only a full decode asked
    # for judges this: the quick probe's first frame may be flagged in a valid stream that starts with a gradual
    # refresh.
    if judge_concealment and p.first_corrupt >= 0:
        raise BadVideoError(f"corrupt: frame {p.first_corrupt} decodes with errors (the decoder concealed them)")
    # The decode routes quarantine such a video at its first sample (its crop windows are drawn for one size): a full
    # decode, which sees every frame, says so at once.
    if p.size_change:
        raise BadVideoError(f"the picture size changes within the stream ({p.size_change})")
    num_frames = p.packets - p.discarded  # packets an edit list discards are decoded, never shown
    if full_decode:
        expected = num_frames - p.leading_nonkey
        if p.decoded_frames < expected:
            raise BadVideoError(f"truncated or corrupt: only {p.decoded_frames} of {expected} frames decode")
        num_frames = p.decoded_frames
    d = p.decoder
    return VideoInfo(num_frames=num_frames, codec=p.codec, width=p.width, height=p.height, fps=round(p.fps, 6),
                     coded_width=d.coded_width if d else 0, coded_height=d.coded_height if d else 0,
                     pix_fmt=d.pix_fmt if d else "", chroma=d.chroma if d else "", bit_depth=d.bit_depth if d else 0,
                     profile=d.profile if d else "", size=st.st_size, mtime_ns=st.st_mtime_ns,
                     colorspace=p.colorspace or "unknown", nvdec_numbering=p.nvdec_numbering or NUMBERED_AS_INDEXED,
                     rotation=p.rotation)


def _probe(path: str, full_decode: bool) -> StreamProbe:
    try:
        return probe_stream(path, full_decode=full_decode)
    except BadVideoError as e:
        # Messages are "<path>: <reason>"; the caller names the file itself.
        msg = str(e)
        raise BadVideoError(msg[len(path) + 2:] if msg.startswith(path + ": ") else msg) from None


def _ends_where_declared(p: StreamProbe) -> bool:
    """Whether the packets' timestamps reach the duration the container declares (within the slack)."""
    if p.duration_s <= 0 or p.packets_end_s < 0:
        return False
    # A file's duration (WebM/Matroska declare no stream's own) covers its longest stream: a complete video may end
    # before its audio does, while a truncated file stops every stream short.
    end = max(p.packets_end_s, p.streams_end_s) if p.duration_of_container else p.packets_end_s
    return reaches_duration(end, p.duration_s, p.fps)


def _check_complete(p: StreamProbe) -> None:
    """BadVideoError when the stream stops short of what its container declares.

    An exact header count (MP4/AVI) is compared with the packets. Without one (WebM/Matroska), time is compared
    with time: the packets' timestamps must reach the declared duration. Nominal rate x duration is not a frame
    count for a variable-frame-rate video (fewer frames than that is valid); it is used only when the packets
    carry no timestamps."""
    if p.declared_exact:
        # An MP4 edit list that starts after a keyframe leaves the samples before that keyframe out of the stream:
        # fewer packets than the header's sample count, but they still reach the (edited) declared duration.
        if p.packets < p.declared_frames and not _ends_where_declared(p):
            raise BadVideoError(f"truncated: {p.packets} frames readable, the header declares {p.declared_frames}")
    elif p.duration_s > 0 and p.packets_end_s >= 0:
        if not _ends_where_declared(p):
            raise BadVideoError(f"truncated: {p.packets} frames readable, ending at {p.packets_end_s:.3f} s of the "
                                f"{p.duration_s:.3f} s the container declares")
    elif p.declared_frames > 0:
        slack = max(1, int(DURATION_SLACK * p.declared_frames))
        if p.packets < p.declared_frames - slack:
            raise BadVideoError(f"truncated: {p.packets} frames readable, {p.declared_frames} expected from the "
                                "declared duration and rate (the packets carry no timestamps)")
