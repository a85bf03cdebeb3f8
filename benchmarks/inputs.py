"""The benchmarks' inputs: synthetic textured clips (encoded with the project's encoder) or a file list, and the
command-line options that choose between them."""

from __future__ import annotations

import argparse
import os
import uuid

import numpy as np

from benchmarks.common import InputError, home_path
from evautil.files import atomic_write_text

__all__ = ["encode_clip", "make_synthetic_clips", "read_list_or_synthetic", "codec_list", "add_input_args",
           "check_clip_length", "check_labels", "scratch_folder"]


def _textured_frames(num_frames: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Moving smooth texture plus mild noise: compresses like camera footage (neither flat nor pure noise). The
    texture of a channel is a product of a function of x and one of y, computed as such: the same values as the
    whole image's formula, a few hundred times faster."""
    xx = np.arange(width, dtype=np.float32)
    yy = np.arange(height, dtype=np.float32)[:, None]
    phase = rng.uniform(0, 2 * np.pi, size=3)
    freq = rng.uniform(0.02, 0.08, size=3)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        chans = []
        for c in range(3):
            v = 127 + 80 * np.sin(freq[c] * (xx + 3 * t) + phase[c]) * np.cos(freq[c] * 0.7 * (yy - 2 * t))
            chans.append(v)
        img = np.stack(chans, -1) + rng.normal(0, 6, size=(height, width, 3))
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def encode_clip(path: str, frames: np.ndarray, codec: str = "h264", fps: int = 25, gop: int | None = None) -> None:
    """Encode uint8 ``(T,H,W,3)`` RGB frames to ``path`` (H.264 in .mp4, VP9 in .webm) with keyframe interval
    ``gop``, with the project's encoder (``write_video``); ``path`` appears only once the clip is whole."""
    from dali_pipelines.pyav_encode import write_video

    # Under a temporary name first (its extension kept: the muxer is chosen from it): a run stopped mid-encode left
    # a shorter clip under the final name, which the next run reused as a complete one. A name of this call's own:
    # two runs given one --data-dir encoded into one shared name, and the second rename found it gone (a traceback).
    root, ext = os.path.splitext(path)
    tmp = f"{root}.part.{uuid.uuid4().hex[:12]}{ext}"  # not mkstemp's: its private mode would stay the clip's
    try:
        write_video(tmp, frames, codec=codec, fps=fps, gop=gop)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def make_synthetic_clips(out_dir: str, num_clips: int, codec: str = "h264", size: tuple[int, int] = (340, 256),
                         num_frames: int = 64, gop: int | None = 16, fps: int = 25, seed: int = 0,
                         num_classes: int = 4) -> list[tuple[str, int, int]]:
    """Write ``num_clips`` textured clips (size is width x height) and a ``list.txt`` (``name label``) into
    ``out_dir``; returns ``[(path, label, num_frames)]``. Existing identical clips are reused, without computing
    their frames again: clip ``i``'s frames depend only on ``(seed, i)``."""
    os.makedirs(out_dir, exist_ok=True)
    ext = "mp4" if codec == "h264" else "webm"
    w, h = size
    clips = []
    lines = []
    for i in range(num_clips):
        name = f"clip{i:03d}_{codec}_{w}x{h}_{num_frames}f_g{gop or 0}.{ext}"
        path = os.path.join(out_dir, name)
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            frames = _textured_frames(num_frames, w, h, np.random.default_rng((seed, i)))
            encode_clip(path, frames, codec=codec, fps=fps, gop=gop)
        clips.append((path, i % num_classes, num_frames))
        lines.append(f"{name} {i % num_classes}")
    # whole or not at all: another run given the same --data-dir may be reading it
    atomic_write_text(os.path.join(out_dir, "list.txt"), "\n".join(lines) + "\n", fsync=False)
    return clips


def scratch_folder(name: str) -> str:
    """``$TMPDIR/<name>-<uid>`` (default /tmp): a benchmark's default folder for its synthetic clips or its lists,
    one per user. A folder of one name for all was made by the first user of a shared machine, and the next one's
    run, unable to write in it, ended in a PermissionError traceback once it wrote its clips or lists."""
    return os.path.join(os.environ.get("TMPDIR", "/tmp"), f"{name}-{os.getuid()}")


def read_list_or_synthetic(args, default_codec: str = "h264") -> tuple[list[tuple[str, int, int]], dict]:
    """Clips for a benchmark from the common CLI options: ``--list``/``--root`` (real data) or ``--synthetic``
    (``--codec --width --height --frames --gop --num-clips --data-dir``). Returns ``[(path, label, frames)]`` and
    a description of the input for the report."""
    if getattr(args, "list", None):
        from dali_pipelines.filelist import list_root, read_video_list
        from dali_pipelines.pyav_open import BadVideoError
        from dali_pipelines.pyav_probe import count_packets

        videos = read_video_list(args.list, list_root(args.list, args.root))
        clips = []
        for e in map(videos.entry, range(min(len(videos), args.num_clips or len(videos)))):
            try:
                clips.append((e.path, e.label, count_packets(e.path)))
            except BadVideoError as err:  # a listed video that is missing or unreadable: name the list line too
                reason = str(err).removeprefix(f"{e.path}: ")
                raise InputError(f"{args.list}:{e.line_no}: cannot read video {e.path!r}: {reason}") from None
        desc = {"input": "list", "list": args.list, "num_clips": len(clips)}
        return clips, desc
    codec = args.codec or default_codec
    data_dir = args.data_dir or scratch_folder("eva_bench_clips")
    # A comma-separated codec list makes a mixed list: NUM_CLIPS clips shared out over the codecs, interleaved.
    codecs = codec.split(",")
    per_codec = -(-args.num_clips // len(codecs))
    made = [make_synthetic_clips(os.path.join(data_dir, c), per_codec, codec=c, size=(args.width, args.height),
                                 num_frames=args.frames, gop=args.gop or None) for c in codecs]
    clips = [clip for group in zip(*made) for clip in group][: max(args.num_clips, len(codecs))]
    desc = {"input": "synthetic", "codec": codec, "width": args.width, "height": args.height,
            "frames": args.frames, "gop": args.gop, "num_clips": len(clips), "dir": os.path.dirname(clips[0][0])}
    return clips, desc


def codec_list(value: str) -> str:
    """The ``--codec`` option: h264, vp9, or a comma-separated mix of them (a mixed list)."""
    codecs = [c.strip() for c in value.split(",") if c.strip()]
    unknown = [c for c in codecs if c not in ("h264", "vp9")]
    if not codecs or unknown or len(set(codecs)) != len(codecs):
        raise argparse.ArgumentTypeError(f"--codec {value!r}: expected h264, vp9 or both comma-separated (vp9,h264)")
    return ",".join(codecs)


def _int_at_least(low: int):
    """An argparse type: a whole number >= ``low`` (a negative frame count or size failed deep in the encoder)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def add_input_args(p, codec: str = "h264", num_clips: int = 8, frames: int = 250, gop: int = 16,
                   frames_flag: str = "--frames") -> None:
    """The input options shared by the benchmarks (``frames_flag`` renames the clip-length option where the
    benchmark's own ``--frames`` means something else)."""
    g = p.add_argument_group("input (a file list, or synthetic clips)")
    g.add_argument("--list", type=home_path,
                   help="video list in the original format ('<relative path> <label>' per line)")
    g.add_argument("--root", type=home_path,
                   help="folder the list's paths are relative to (default: the list's folder)")
    g.add_argument("--synthetic", action="store_true", help="generate clips (default when --list is not given)")
    g.add_argument("--codec", default=None, type=codec_list,
                   help=f"synthetic codec: h264, vp9, or vp9,h264 for a list mixing both (default {codec})")
    g.add_argument("--width", type=_int_at_least(1), default=340)
    g.add_argument("--height", type=_int_at_least(1), default=256)
    g.add_argument(frames_flag, type=_int_at_least(1), default=frames, help="frames per synthetic clip")
    g.add_argument("--gop", type=_int_at_least(0), default=gop,
                   help="keyframe interval of synthetic clips (0: encoder default)")
    g.add_argument("--num-clips", type=_int_at_least(1), default=num_clips,
                   help="clips to generate / read from the list")
    g.add_argument("--data-dir", type=home_path, default=None,
                   help="where synthetic clips are written (reused when present)")


def check_clip_length(parser, args, samples: int, why: str, frames_flag: str = "--frames") -> None:
    """``parser.error`` (one line naming the flag, exit 2) when the synthetic clips (no ``--list``) would be shorter
    than the ``samples`` frames (at least 2: a video, not a still image) the benchmark samples from each (``why``
    says where that number comes from): a 1-frame clip ran, its one frame repeated ``samples`` times, and the
    figures were those of still images, not of decoding a video."""
    frames, need = getattr(args, frames_flag.lstrip("-").replace("-", "_")), max(samples, 2)
    if getattr(args, "list", None) or frames >= need:
        return
    parser.error(f"{frames_flag} {frames}: a synthetic clip must hold at least {need} frames ({why}); give "
                 f"{frames_flag} {need} or more")


def check_labels(args, clips: list[tuple[str, int, int]], num_classes: int) -> None:
    """An :class:`InputError` naming ``--list`` (or the synthetic clips) and ``--num-classes`` when a clip's label is
    not below ``num_classes``: our loader refused it once the clips were read (and, in eval_throughput, the decode
    comparison measured), naming the benchmark's own repeated list and DATA.NUM_CLASSES, neither of them typed (a
    Kinetics-700 list with the default --num-classes 400)."""
    label, path = max((clip[1], clip[0]) for clip in clips)
    if label < num_classes:
        return
    where = (f"--list {args.list}: video {path!r} has label {label}" if getattr(args, "list", None)
             else f"the synthetic clips are labelled 0 to {label}")
    raise InputError(f"{where}, outside [0, {num_classes}) of --num-classes {num_classes}; give --num-classes "
                     f"{label + 1} or more")
