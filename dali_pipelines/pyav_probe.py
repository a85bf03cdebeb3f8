"""What the dataset index reads of a video with PyAV (FFmpeg), and the NVDEC route's check, the tools and the
benchmarks with it: the first video stream's facts (packet count, size, codec, rate, declared duration and frame
count, where the packets end, the decoder facts, the colour tag and display turn of its first frame, packets before
the first keyframe or hidden by an edit list; :func:`probe_stream` decodes the first frame only, unless asked for
all), the frame count of a full decode (:func:`count_frames`), and whether NVDEC, which shows every packet's picture
in the order of the packets' pts, would number its frames otherwise (:func:`first_pictures_not_shown`).

Decoding is ``pyav_io``'s; what both modules use, the opening of a video and :class:`pyav_open.BadVideoError`, is
``pyav_open``'s. No DALI import here: this module must work on machines (and in processes) without DALI.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av

from .colour import colorspace_name
from .pyav_open import BadVideoError, VideoSource, ffmpeg_message, first_video_stream, open_video, source_name

__all__ = ["first_pictures_not_shown", "nvdec_pts_problem", "NVDEC_REORDER_WINDOW", "count_frames", "count_packets",
           "StreamProbe", "DecoderFacts", "probe_stream", "DURATION_SLACK", "reaches_duration", "display_rotation",
           "rotation_words"]


# DALI 2.4's NVDEC decoder (fn.decoders.video on 'mixed' builds no index) tags each picture, in decode order, with
# its packet's pts (a counter 0, 1, 2... for a packet without one), keeps them as 32-bit ints with -1 marking an
# empty slot, and hands out the smallest pts among the next 8 decoded pictures (frames_decoder_gpu.cc/.h:
# SendFrameToParser, ReadNextFrameWithoutIndex, num_decode_surfaces_ = 8).
NVDEC_REORDER_WINDOW = 8


def nvdec_pts_problem(pts: list[int | None]) -> str:
    """Why DALI's NVDEC decoder would order the pictures of packets with these pts (in decode order) otherwise than
    their display order, which FFmpeg and the index number by, or '' when it would not."""
    if any(t is None for t in pts):
        return "packets carry no timestamp (NVDEC would hand the frames out in decode order, not display order)"
    if any(t == -1 for t in pts):
        return "a packet has timestamp -1 (NVDEC takes -1 for an empty slot and drops that frame)"
    if any(not -2**31 <= t < 2**31 for t in pts):
        return "timestamps beyond 32 bits (NVDEC keeps them as 32-bit integers)"
    if len(set(pts)) < len(pts):
        return "packets share a timestamp (NVDEC's order between them is arbitrary)"
    late = max((p - r for r, p in enumerate(sorted(range(len(pts)), key=pts.__getitem__))), default=0)
    if late >= NVDEC_REORDER_WINDOW:
        return (f"a frame is decoded {late} packets after its place in display order (NVDEC reorders within "
                f"{NVDEC_REORDER_WINDOW})")
    return ""


class _NvdecNumbering:
    """What :func:`first_pictures_not_shown` judges, gathered packet by packet in decode order (the data packets
    only): whether the first is a keyframe, how many pictures an edit list hides before the first one shown, and
    every packet's pts."""

    def __init__(self) -> None:
        self.pts: list[int | None] = []
        self.hidden = 0
        self.shown = False
        self.inside_gop = False

    def add(self, packet: av.Packet) -> None:
        if not self.pts and not packet.is_keyframe:
            self.inside_gop = True
        self.pts.append(packet.pts)
        self.shown = self.shown or not packet.is_discard
        self.hidden += not self.shown

    def problem(self) -> str:
        if self.inside_gop:
            return "the stream starts inside a GOP (its first packet is no keyframe)"
        if self.hidden:
            return f"an MP4 edit list hides its first {self.hidden} pictures"
        return nvdec_pts_problem(self.pts)


def first_pictures_not_shown(src: VideoSource, limit: int = 256, name: str = "") -> str:
    """Why a decoder that numbers a stream's pictures from its first packet on, ordered by their packets' pts
    (DALI's NVDEC decoder: it shows every packet's picture and reads no container flag) would number ``src``'s
    frames otherwise than FFmpeg and the index do, or '' when it would not: packets an MP4 edit list hides before
    the first frame shown (a file cut without re-encoding, a phone's trim), a first packet that is no keyframe (a
    stream that starts inside a GOP, whose first pictures decoders drop), or pts that do not give the display order
    (:func:`nvdec_pts_problem`: a raw .h264 stream, whose packets have none). Demuxes every packet, decodes none
    (counts up to ``limit`` hidden ones). ``name``: the file's name in errors, for bytes read from it
    (BadVideoError: not a readable video). The index's probe records the same verdict
    (``StreamProbe.nvdec_numbering``)."""
    name = name or source_name(src)
    check = _NvdecNumbering()
    with open_video(src, name) as container:
        stream = first_video_stream(container, name)
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                check.add(packet)
                if check.inside_gop or check.hidden >= limit:
                    break
        except av.error.FFmpegError as e:
            raise BadVideoError(f"{name}: {ffmpeg_message(e)}") from e
    return check.problem()


def count_frames(path: VideoSource, threads: int = 0) -> int:
    """Number of frames a full decode of the first video stream yields (decode only, no RGB conversion).

    Raises:
        BadVideoError: unreadable file, no video stream, or a decode error (naming the file and where).
    """
    name = source_name(path)
    container = open_video(path)
    n = 0
    try:
        stream = first_video_stream(container, name)
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        for _ in container.decode(stream):
            n += 1
    except av.error.FFmpegError as e:
        raise BadVideoError(f"{name}: decode error after {n} frames ({ffmpeg_message(e)})") from e
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
    ``duration_s`` is the duration the container declares (0: none); ``packets_end_s`` is where the packets' own
    timestamps end (the latest pts + packet duration, in seconds; -1 when a packet has no timestamp).
    ``duration_of_container``: ``duration_s`` is the whole file's (the stream declares none, as in WebM/Matroska),
    which another stream (a longer audio track) may set; ``streams_end_s`` is where the packets of every stream end
    (seconds; -1: unknown). ``discarded`` counts the packets the container marks to be decoded but not shown
    (before the start of an MP4 edit list: a file cut without re-encoding, a phone's trim); ``leading_nonkey`` the
    packets before the first keyframe (a stream that starts inside a GOP: decoders drop the pictures that have no
    reference).
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
    decoder: "DecoderFacts | None" = None
    duration_s: float = 0.0
    packets_end_s: float = -1.0
    discarded: int = 0
    leading_nonkey: int = 0
    duration_of_container: bool = False
    streams_end_s: float = -1.0
    first_corrupt: int = -1  # the first decoded frame the decoder flags as damaged (errors concealed); -1: none
    size_change: str = ""  # where the decoded frames' picture size first changes ('96x72 at frame 0, ...'), '' if not
    colorspace: str = ""  # the first decoded frame's YUV matrix tag, FFmpeg's name (colour.colorspace_name)
    nvdec_numbering: str = ""  # why NVDEC would number the frames otherwise (first_pictures_not_shown), '' if not
    rotation: int = 0  # the first decoded frame's display turn, as display_rotation reads it (0: none, or no frame)


@dataclass(frozen=True)
class DecoderFacts:
    """What decides which hardware or software decoder can take a stream (NVDEC has per-codec limits on size,
    chroma format and bit depth): codec, coded size (the decoder's macroblock-aligned size, e.g. 1920x1088 for
    1080p), pixel format, chroma format ('420', '422', '444', '400' for grey, else 'other'), bit depth, profile."""

    codec: str
    coded_width: int
    coded_height: int
    pix_fmt: str
    chroma: str
    bit_depth: int
    profile: str


def _chroma_and_depth(pix_fmt: str) -> tuple[str, int]:
    try:
        fmt = av.VideoFormat(pix_fmt, 16, 16)
    except (ValueError, TypeError, av.error.FFmpegError):
        return "other", 0
    comps = fmt.components
    depth = int(comps[0].bits) if comps else 0
    if len(comps) < 3 or fmt.is_rgb:
        return ("400" if len(comps) in (1, 2) and not fmt.is_rgb else "other"), depth
    sub = (16 // max(1, comps[1].width), 16 // max(1, comps[1].height))
    return {(2, 2): "420", (2, 1): "422", (1, 1): "444"}.get(sub, "other"), depth


def _decoder_facts(stream: av.video.stream.VideoStream, codec: str) -> DecoderFacts:
    ctx = stream.codec_context
    pix_fmt = (ctx.pix_fmt or "") if ctx is not None else ""
    chroma, depth = _chroma_and_depth(pix_fmt) if pix_fmt else ("other", 0)
    # The coded size is known once a frame has been decoded (the probe decodes the first): libavcodec's, which is
    # NVDEC's for the codecs whose limits are near real sizes (H.264 120x120 -> 128x128, a 120x120 VP9 stays
    # 120x120 and goes to the CPU). Only a stream whose first frame did not decode (quarantined anyway) takes the
    # display size rounded up to 16.
    cw = int(getattr(ctx, "coded_width", 0) or 0) or -(-int(stream.width) // 16) * 16
    ch = int(getattr(ctx, "coded_height", 0) or 0) or -(-int(stream.height) // 16) * 16
    return DecoderFacts(codec=codec, coded_width=cw, coded_height=ch, pix_fmt=pix_fmt, chroma=chroma,
                        bit_depth=depth, profile=str(getattr(ctx, "profile", "") or ""))


def _fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


class _PictureSizes:
    """Where the decoded frames' picture size first changes (a new SPS mid-stream), in the words of the decode
    routes' own error (``pyav_io``): '96x72 at frame 0, 160x120 at frame 10'; '' while it has not."""

    def __init__(self) -> None:
        self.first: tuple[int, int] | None = None
        self.change = ""

    def add(self, frames: list, decoded: int) -> None:
        """``frames``: the decoder's next output, ``decoded`` frames after the first."""
        for k, f in enumerate(frames):
            size = (f.width, f.height)
            if self.first is None:
                self.first = size
            elif size != self.first and not self.change:
                self.change = f"{self.first[0]}x{self.first[1]} at frame 0, {size[0]}x{size[1]} at frame {decoded + k}"


def _declared_duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if container.format.name == "avi" and stream.frames > 0 and stream.time_base:
        # An AVI header counts the video's chunks, one tick of the stream's time base each (a dropped frame's empty
        # chunk too). FFmpeg's duration comes from the index at the file's end or, where a cut took that away, from
        # the file's size at its bit rate: a file cut at an even bit rate would declare where it was cut.
        return float(stream.frames * Fraction(stream.time_base))
    if stream.duration and stream.time_base:
        return float(stream.duration * Fraction(stream.time_base))
    if container.duration:
        return container.duration / av.time_base  # microseconds
    return 0.0


def _declared_frames(stream: av.video.stream.VideoStream, duration_s: float, fps: float) -> tuple[int, bool]:
    if stream.frames > 0:
        return int(stream.frames), True
    if duration_s > 0 and fps > 0:
        return int(round(duration_s * fps)), False
    return 0, False


# Duration-derived frame counts (WebM/Matroska have no frame count in the header) are estimates: allow this much
# slack before calling a file truncated.
DURATION_SLACK = 0.02


def reaches_duration(end_s: float, duration_s: float, fps: float) -> bool:
    """Whether packets that end at ``end_s`` reach a declared ``duration_s``, within the slack (a share of the
    duration, at least two frames)."""
    slack = max(DURATION_SLACK * duration_s, 2.0 / fps if fps > 0 else 0.0)
    return end_s >= duration_s - slack


def _other_streams_end_s(container, video) -> float:
    """Where the packets of ``container``'s streams other than ``video`` end, in seconds (-1: none, or unknown)."""
    others = [s for s in container.streams if s.index != video.index and s.time_base]
    end_s = -1.0
    try:
        container.seek(0)
        for packet in container.demux(*others):
            if packet.size and packet.pts is not None:
                end_s = max(end_s, float((packet.pts + (packet.duration or 0)) * Fraction(packet.stream.time_base)))
    except av.error.FFmpegError:
        pass  # judged on the video's own end, as without other streams
    return end_s


def display_rotation(path: VideoSource) -> int:
    """The turn a player gives the first video stream's frames, in degrees counter-clockwise (0 to 359; 0 for none):
    a phone's portrait video stores its frames sideways with a display matrix saying how to show them, which FFmpeg
    hands on as its first frame's ``rotation`` (PyAV reads no stream's side data: a frame is decoded). The project's
    decoders use frames as stored, matrix or not. 0 too when no frame decodes (the video's own reading says why).
    :func:`probe_stream` records the same turn (``StreamProbe.rotation``) from the frame it decodes anyway."""
    try:
        container = open_video(path)
    except BadVideoError:
        return 0
    try:
        for frame in container.decode(first_video_stream(container, source_name(path))):
            return _turn(frame)
    except (av.error.FFmpegError, BadVideoError):
        pass
    finally:
        container.close()
    return 0


def _turn(frame: av.VideoFrame) -> int:
    """A decoded frame's display turn in whole degrees counter-clockwise, 0 to 359."""
    return round(frame.rotation) % 360


def rotation_words(degrees: int) -> str:
    """``90° clockwise`` for :func:`display_rotation`'s 270: a turn as a person says it."""
    return f"{degrees}° counter-clockwise" if degrees <= 180 else f"{360 - degrees}° clockwise"


def probe_stream(path: VideoSource, full_decode: bool = False) -> StreamProbe:
    """Demux the whole first video stream, count its data packets and check that the first frame decodes.

    With ``full_decode`` every packet is decoded and the decoded-frame count is recorded as well.

    Raises:
        BadVideoError: the file is missing, not a container, or has no video stream. Problems *inside* the stream
            (demux/decode errors, no frames) are reported through the returned fields so the caller can word them.
    """
    name = source_name(path)
    container = open_video(path)
    try:
        stream = first_video_stream(container, name)
        ctx = stream.codec_context
        # The codec's own name ('av1'), not the name of the decoder FFmpeg picked for it ('libdav1d'): routing and
        # NVDEC's limits are keyed by codec.
        codec = ctx.codec.canonical_name if ctx is not None else (stream.codec.name if stream.codec else "unknown")
        fps = _fps(stream)
        duration_s = _declared_duration_s(container, stream)
        declared, exact = _declared_frames(stream, duration_s, fps)
        packets, decoded, first_ok, error = 0, 0, False, ""
        discarded, leading, keyframe_seen, first_corrupt = 0, 0, False, -1
        colorspace, rotation = "", 0
        end_ticks: int | None = 0  # where the packets' timestamps end, in the stream's time base
        numbering = _NvdecNumbering()
        sizes = _PictureSizes()
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet at the end of the stream carries no data
                    continue
                packets += 1
                numbering.add(packet)
                discarded += bool(packet.is_discard)
                keyframe_seen = keyframe_seen or bool(packet.is_keyframe)
                leading += not keyframe_seen
                if packet.pts is None or end_ticks is None:
                    end_ticks = None
                else:
                    end_ticks = max(end_ticks, packet.pts + (packet.duration or 0))
                if full_decode or not first_ok:
                    try:
                        frames = stream.decode(packet)
                    except av.error.FFmpegError as e:
                        error = error or f"decode error at packet {packets - 1} ({ffmpeg_message(e)})"
                        continue
                    if first_corrupt < 0:
                        first_corrupt = next((decoded + k for k, f in enumerate(frames) if f.is_corrupt), -1)
                    sizes.add(frames, decoded)
                    colorspace = colorspace or (colorspace_name(frames[0].colorspace) if frames else "")
                    rotation = rotation if decoded or not frames else _turn(frames[0])
                    decoded += len(frames)
                    first_ok = first_ok or decoded > 0
            if full_decode or not first_ok:
                try:  # drain the decoder's delayed frames
                    frames = stream.decode(None)
                    if first_corrupt < 0:
                        first_corrupt = next((decoded + k for k, f in enumerate(frames) if f.is_corrupt), -1)
                    sizes.add(frames, decoded)
                    colorspace = colorspace or (colorspace_name(frames[0].colorspace) if frames else "")
                    rotation = rotation if decoded or not frames else _turn(frames[0])
                    decoded += len(frames)
                    first_ok = first_ok or decoded > 0
                except av.error.FFmpegError as e:
                    error = error or f"decode error while flushing ({ffmpeg_message(e)})"
        except av.error.FFmpegError as e:
            error = error or f"demux error after {packets} packets ({ffmpeg_message(e)})"
        packets_end_s = (float(end_ticks * Fraction(stream.time_base))
                         if end_ticks is not None and stream.time_base else -1.0)
        of_container = not (stream.duration and stream.time_base)
        # A duration that only the container declares (WebM/Matroska) may be set by a longer audio track: where the
        # other streams end is read (a second pass, over their packets only) when the video stops short of it.
        streams_end = (_other_streams_end_s(container, stream) if of_container and not error and packets_end_s >= 0
                       and duration_s > 0 and not reaches_duration(packets_end_s, duration_s, fps) else -1.0)
        return StreamProbe(codec=codec, width=int(stream.width), height=int(stream.height), fps=fps,
                           packets=packets, declared_frames=declared, declared_exact=exact, first_frame_ok=first_ok,
                           decoded_frames=decoded if full_decode else -1, error=error,
                           decoder=_decoder_facts(stream, codec), duration_s=duration_s,
                           packets_end_s=packets_end_s, discarded=discarded,
                           leading_nonkey=leading if keyframe_seen else 0, duration_of_container=of_container,
                           streams_end_s=streams_end, first_corrupt=first_corrupt, size_change=sizes.change,
                           colorspace=colorspace, nvdec_numbering=numbering.problem(), rotation=rotation)
    finally:
        container.close()
