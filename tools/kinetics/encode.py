"""Re-encoding one video to short-GOP H.264 (CFR, no B-frames, +faststart) and verifying what was written: the
encoder settings, their checks, and the probe of an output's stream (``reencode.py`` does a whole tree with it)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction

from dali_pipelines.pyav_probe import count_frames

from .common import KineticsError
from .source_record import SOURCE_NOTE_KEY
from .video_files import broken_link

__all__ = ["EncodeSettings", "check_h264_encoder", "check_encode_settings", "count_frames", "probe_output",
           "reencode_video"]


@dataclass(frozen=True)
class EncodeSettings:
    """H.264 encoding parameters.

    Attributes:
        short_side: output short side in pixels; the long side keeps the aspect ratio, both rounded to even.
        gop: a keyframe every ``gop`` frames exactly (scene-cut keyframes off), closed GOPs, no B-frames, so any
            frame decodes from the preceding keyframe in at most ``gop - 1`` extra frames.
        crf: x264 constant rate factor (quality; lower is better and larger).
        preset: x264 speed preset.
        threads: x264 threads per worker process.
        no_upscale: keep videos whose short side is already <= ``short_side`` at their size (only made even).
    """

    short_side: int = 320
    gop: int = 16
    crf: int = 23
    preset: str = "veryfast"
    threads: int = 1
    no_upscale: bool = False


def check_h264_encoder() -> None:
    """Raise :class:`KineticsError` if PyAV's FFmpeg has no libx264 encoder."""
    try:
        import av
        from av.codec import Codec
    except ImportError as e:
        raise KineticsError(f"re-encoding needs PyAV (the 'av' package): {e}") from e
    try:
        Codec("libx264", "w")
    except Exception as e:
        raise KineticsError(f"PyAV {av.__version__}'s FFmpeg has no libx264 encoder ({e}); install a PyAV build "
                            f"with libx264 (the standard PyAV wheels include it)") from e


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")


def check_encode_settings(settings: EncodeSettings) -> None:
    """Encode one tiny frame with ``settings`` and raise :class:`KineticsError` naming ``--preset`` or ``--crf``
    if libx264 refuses them: once, before any worker starts (else every file fails alone, with avcodec_open2's
    bare error code)."""
    import av
    import av.logging

    def encode(options: dict[str, str]) -> Exception | None:
        cc = av.CodecContext.create("libx264", "w")
        cc.width, cc.height, cc.pix_fmt, cc.time_base = 64, 64, "yuv420p", Fraction(1, 25)
        cc.options = options
        level = av.logging.get_level()
        av.logging.set_level(av.logging.PANIC)  # x264's own "[error]" line would come before ours
        try:
            cc.open()
            cc.encode(av.VideoFrame(64, 64, "yuv420p"))
            cc.encode(None)
        except Exception as e:
            return e
        finally:
            av.logging.set_level(level)
        return None

    # A name x264 does not know is refused before libx264 sees it: x264 prints its own "[error]" line straight to
    # the terminal, past FFmpeg's logging, before ours.
    if settings.preset.lower() not in X264_PRESETS:
        raise KineticsError(f"--preset {settings.preset!r} is not one of x264's presets: {', '.join(X264_PRESETS)}")
    e = encode({"preset": settings.preset})
    if e is not None:
        raise KineticsError(f"--preset {settings.preset!r}: libx264 refuses it ({type(e).__name__}); x264's presets "
                            f"are {', '.join(X264_PRESETS)}")
    e = encode(_x264_options(settings))
    if e is not None:
        raise KineticsError(f"--crf {settings.crf} (with --preset {settings.preset!r}, --gop {settings.gop}, "
                            f"--threads {settings.threads}): libx264 refuses these settings: {e}")


def _x264_options(settings: EncodeSettings) -> dict[str, str]:
    # keyint = min-keyint and no scene-cut keyframes: keyframes exactly every gop frames;
    # open-gop=0: every GOP is closed, decodable from its own keyframe.
    return {"preset": settings.preset, "crf": str(settings.crf), "threads": str(settings.threads),
            "x264-params": f"keyint={settings.gop}:min-keyint={settings.gop}:scenecut=0:bframes=0:open-gop=0"}


# How much shorter than its container says a video without a frame count may decode before that is a warning: the
# container's length is its longest stream's, and an audio stream may outlast the video by a frame or two.
CUT_SHORT_S = 0.5


def _output_size(width: int, height: int, s: EncodeSettings) -> tuple[int, int]:
    short = min(width, height)
    target = short if (s.no_upscale and short <= s.short_side) else s.short_side
    scale = target / short

    def even(x: float) -> int:
        return max(2, int(round(x / 2.0)) * 2)

    return even(width * scale), even(height * scale)


def probe_output(path: str) -> dict:
    """Codec, size, frame count, keyframe positions and B-frame presence of an encoded file (demux + decode).

    ``keyframes`` are indices in decode order of the packets flagged as keyframes; ``reordered`` is True when
    presentation order differs from decode order or decoding is delayed (dts != pts), i.e. the stream has or allows
    B-frames; ``x264`` holds the encoder settings libx264 embeds in the stream (``{}`` for other encoders).
    """
    import av

    with av.open(path) as c:
        st = c.streams.video[0]
        info = {"codec": st.codec_context.name, "width": st.codec_context.width, "height": st.codec_context.height,
                "pix_fmt": st.codec_context.pix_fmt, "fps": float(st.average_rate) if st.average_rate else None}
        keyframes, pts, delayed, x264 = [], [], False, {}
        for p in c.demux(st):
            if p.size == 0:  # flush packet
                continue
            if not pts:
                # libx264 writes its settings into the first access unit ("x264 - core N ... options: a=1 b=2").
                m = re.search(rb"x264 - core .*? options: ([^\x00]*)", bytes(p))
                if m:
                    x264 = dict(kv.split("=", 1) for kv in m.group(1).decode("ascii", "replace").split()
                                if "=" in kv)
            if p.is_keyframe:
                keyframes.append(len(pts))
            delayed |= p.dts is not None and p.dts != p.pts
            pts.append(p.pts)
    info["packets"] = len(pts)
    info["keyframes"] = keyframes
    info["reordered"] = pts != sorted(pts) or delayed
    info["x264"] = x264
    info["frames"] = count_frames(path)
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    # +faststart moves the moov atom (the index) in front of the media data.
    moov, mdat = head.find(b"moov"), head.find(b"mdat")
    info["faststart"] = moov != -1 and (mdat == -1 or moov < mdat)
    return info


def _open_h264_output(tmp: str, width: int, height: int, rate: Fraction, settings: EncodeSettings,
                      note: str = "") -> tuple:
    """An MP4 container at ``tmp`` with one libx264 stream: fixed closed GOPs of ``settings.gop``, no B-frames;
    ``note``, if any, in its metadata (:data:`SOURCE_NOTE_KEY`)."""
    import av

    # made here, once there is a frame to write: made before the source was opened, a class whose every source
    # failed was left as an empty folder in --dst, an empty class to the lists of that tree
    os.makedirs(os.path.dirname(os.path.abspath(tmp)), exist_ok=True)
    out = av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"})
    if note:
        out.metadata[SOURCE_NOTE_KEY] = note
    ost = out.add_stream("libx264", rate=rate)
    ost.width, ost.height, ost.pix_fmt = width, height, "yuv420p"
    ost.time_base = 1 / rate
    cc = ost.codec_context
    cc.gop_size = settings.gop
    cc.max_b_frames = 0
    cc.options = _x264_options(settings)
    return out, ost


def _transcode(src: str, inp, vs, tmp: str, rate: Fraction, settings: EncodeSettings,
               note: str = "") -> tuple[int, int, int]:
    """Decode every frame of ``vs`` and encode it as frame ``n`` of ``tmp``; returns (frames, width, height)."""
    import av

    from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

    n, w, h = 0, 0, 0
    out = ost = None
    scaler = VideoReformatter()
    try:
        for frame in inp.decode(vs):
            if out is None:
                w, h = _output_size(frame.width, frame.height, settings)
                out, ost = _open_h264_output(tmp, w, h, rate, settings, note)
            # The output is limited-range yuv420p: a full-range source (yuvj420p, e.g. MJPEG) must be converted,
            # not copied, or its decoded grey levels come out stretched (1.164 * y - 19).
            full = frame.format.name.startswith("yuvj") or frame.color_range == ColorRange.JPEG
            # The output is untagged, which every decoder reads as BT.601 (DALI's two decoders whatever the tag), so
            # a source tagged with another matrix (BT.709: most HD video) is converted to BT.601 here, not copied,
            # or its colours shift for every decoder. The source's matrix is its frames' tag (untagged: BT.601).
            img = scaler.reformat(frame, width=w, height=h, format="yuv420p", interpolation="BICUBIC",
                                  dst_colorspace=Colorspace.ITU601,
                                  src_color_range=ColorRange.JPEG if full else None, dst_color_range=ColorRange.MPEG)
            img.pts = n
            img.time_base = 1 / rate
            # The decoder tags the source's own I-frames and libx264 honours such tags as forced
            # keyframes, which would break the fixed GOP; let the encoder choose.
            img.pict_type = av.video.frame.PictureType.NONE
            for packet in ost.encode(img):
                out.mux(packet)
            n += 1
        if out is not None:
            for packet in ost.encode():
                out.mux(packet)
    except KineticsError:
        raise
    except Exception as e:
        raise KineticsError(f"{src}: decode/encode failed after {n} frames: {type(e).__name__}: {e}") from e
    finally:
        if out is not None:
            out.close()
    return n, w, h


def _unreadable(path: str, error: Exception) -> str:
    """Why ``path`` does not open, in words: PyAV's message repeats the path after an errno no one can read."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file, 0 bytes"
    except OSError:
        pass
    return getattr(error, "strerror", None) or f"{type(error).__name__}: {error}"


def reencode_video(src: str, dst: str, settings: EncodeSettings = EncodeSettings(), note: str = "") -> dict:
    """Re-encode ``src`` to H.264 at ``dst`` (MP4), then verify the output's frame count.

    Every decoded frame becomes one output frame at a constant rate (the source's average rate), so frame ``i`` of
    the output is frame ``i`` of the source: frame-index sampling and precomputed frame counts stay valid. A
    variable-rate source is re-timed, not resampled. Audio and metadata are dropped. The output is written to
    ``dst + '.part'`` and renamed to ``dst`` only after verification, so an interrupted run never leaves a partial
    file under the final name, and a machine going down none either (it is synced first). ``src`` is only read.
    ``note`` goes into the output's metadata: what it was written from (``source_record.source_note``), which
    thus gets the output's name with it.

    Returns:
        ``{"src", "dst", "frames", "width", "height", "fps", "src_header_frames", "warnings": [...]}``.

    Raises:
        KineticsError: the source cannot be decoded, has no frames, or the output does not verify.
    """
    import av

    tmp = dst + ".part"
    warnings: list[str] = []
    try:
        try:
            inp = av.open(src)
        except Exception as e:
            link = broken_link(src, "file") if not os.path.exists(src) else None
            if link:  # the dataset was moved, or a download removed: named as every input link is
                raise KineticsError(f"{src}: the source {link}") from e
            raise KineticsError(f"{src}: not a readable video ({_unreadable(src, e)})") from e
        with inp:
            if not inp.streams.video:
                raise KineticsError(f"{src}: no video stream")
            vs = inp.streams.video[0]
            # Parallelism comes from the worker processes; per-file threads only when asked for.
            vs.thread_type = "AUTO"
            vs.codec_context.thread_count = settings.threads
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            if not rate or rate <= 0:
                rate = Fraction(25)
                warnings.append("source frame rate unknown; encoded at 25 fps")
            # Keep CFR timestamps exact: a rational rate such as 30000/1001 is used as is.
            rate = Fraction(rate).limit_denominator(1001)
            header_frames = int(vs.frames or 0)
            # WebM and MKV give no frame count, but say how long they are: one cut short (a download stopped) still
            # decodes, to fewer frames, and was re-encoded into an output as short without a word
            header_s = (float(vs.duration * vs.time_base) if vs.duration and vs.time_base
                        else (inp.duration or 0) / 1e6)
            n, w, h = _transcode(src, inp, vs, tmp, rate, settings, note)
        if n == 0:
            raise KineticsError(f"{src}: no decodable video frames")
        if header_frames and header_frames != n:
            warnings.append(f"container header says {header_frames} frames, decoded {n}")
        elif not header_frames and n / rate < header_s - CUT_SHORT_S:
            warnings.append(f"container header says {header_s:.2f} s, decoded {n} frames ({float(n / rate):.2f} s)")
        try:
            got = count_frames(tmp)
        except Exception as e:
            raise KineticsError(f"{src}: output {tmp} does not decode: {e}") from e
        if got != n:
            raise KineticsError(f"{src}: output has {got} frames, source decoded to {n}")
        # Its data on the disk before its name says it is finished: renamed unsynced, a machine going down could
        # leave a truncated file under the final name, which every resume skips as done. (The sync costs a few ms
        # against the encode's seconds.)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        return {"src": src, "dst": dst, "frames": n, "width": w, "height": h, "fps": float(rate),
                "src_header_frames": header_frames, "warnings": warnings}
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
