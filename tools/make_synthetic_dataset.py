#!/usr/bin/env python
"""Write a synthetic motion-only video dataset (train/val lists in the original format, labels.csv).

Example (the demo's dataset: 4 classes, 256 train + 24 val clips per class, 32 frames of 64x48 H.264 (8-bit 4:2:0),
which NVDEC decodes on a GPU machine and PyAV on a CPU one):

    python tools/make_synthetic_dataset.py --out data/synthetic
    python tools/make_synthetic_dataset.py --out data/synth_vp9 --codec vp9 --gop 16

Re-running with the same parameters reuses the existing dataset, or the clips a stopped run finished (the rest are
written); a clip or list changed since it was written (not the size and hash dataset.json records) is written again;
--force regenerates it. A folder that holds lists (train.txt, val.txt, labels.csv) but no dataset.json is someone
else's data: refused unless --force, as is one whose dataset.json is another tool's.
SIGTERM or SIGUSR1 stops it as Ctrl-C does, keeping the finished clips (exit
code 4).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

# Runnable as `python tools/make_synthetic_dataset.py` from the repo root without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evautil.interrupt import (STARTING, STOPPED_EXIT_STATUS, Stopped, finished, on_interrupt,  # noqa: E402
                               stop_signals_raise, stopped_during_work)

if __name__ == "__main__":  # a Ctrl-C (or a scheduler's SIGTERM) during the imports below (numpy, PyAV): one line too
    on_interrupt(STARTING, stop_status=STOPPED_EXIT_STATUS)

from dali_pipelines.nvdec_support import NVDEC_LIMITS  # noqa: E402
from evautil.cli import ArgumentParser  # noqa: E402
from evautil.files import output_path_problem  # noqa: E402
from evautil.progress import counted, format_bytes  # noqa: E402
from tools.synthetic import (CODECS, MissingEncoderError, NotEnoughMemoryError, OtherDataError,  # noqa: E402
                             clip_memory, frames_that_fit, make_synthetic_dataset)

# A bound, not only a check for typos: 100000x100000 was a MemoryError traceback from the frame generator.
LARGEST_SIDE = max(max(limits.max_size) for limits in NVDEC_LIMITS.values())
MIN_FPS, MAX_FPS = 0.001, 1000.0
# Far above any real dataset (Kinetics-700: under 1000 clips a class); 10**11 built its list of clips in memory
# until it ran out, with no line said.
MAX_PER_CLASS = 1_000_000


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like 128x96 (WIDTHxHEIGHT), got {text!r}") from None
    if w < 8 or h < 8 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"--size needs even width and height >= 8, got {text!r}")
    if w > LARGEST_SIDE or h > LARGEST_SIDE:
        raise argparse.ArgumentTypeError(f"--size is at most {LARGEST_SIDE}x{LARGEST_SIDE} (the largest picture "
                                         f"NVDEC decodes), got {text!r}")
    return w, h


def _too_large(args: argparse.Namespace, e: NotEnoughMemoryError) -> str:
    """The line refusing a clip that does not fit in the memory available, and the --frames that would fit."""
    w, h = args.size
    fits = frames_that_fit(e.available, args.size)
    what_fits = (f"give --frames {fits} or fewer at this --size, or a smaller --size" if fits else
                 f"give a smaller --size (one frame of {w}x{h} needs about {format_bytes(clip_memory(1, args.size))})")
    return (f"--size {w}x{h} with --frames {args.frames}: one clip needs about {format_bytes(e.need)} to render and "
            f"encode and {format_bytes(e.available)} of memory is available, even with --workers 1: {what_fits}")


def _parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                        formatter_class=argparse.RawDescriptionHelpFormatter)  # the examples and the reuse rule too
    ap.add_argument("--out", required=True, help="output directory")
    # H.264 by default: it is the one codec whose NVDEC minimum size (48x16) lets the demo's small clips decode
    # on a GPU (VP9 needs 128x128, HEVC 144x144); on a CPU machine PyAV decodes it.
    ap.add_argument("--codec", default="h264", choices=sorted(CODECS),
                    help="default h264; vp9/vp8/mjpeg decode on DALI's CPU backend too; h264/mpeg4 need NVDEC or "
                         "PyAV")
    # The demo defaults: many small clips. A tiny model trained from scratch memorises a few hundred clips, and
    # 64x48 is already larger than the demo's 48-px input after its resize (short side 54 px), so bigger frames
    # would only cost encoding and decoding time.
    ap.add_argument("--train-per-class", type=int, default=256, help="training clips per class (default 256)")
    ap.add_argument("--val-per-class", type=int, default=24, help="validation clips per class (default 24)")
    ap.add_argument("--frames", type=int, default=32, help="frames per clip (default 32)")
    ap.add_argument("--size", type=_size, default=(64, 48), help="WIDTHxHEIGHT (default 64x48)")
    ap.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25), from 0.001 to 1000")
    ap.add_argument("--gop", type=int, default=None, help="keyframe interval in frames (default: encoder's)")
    ap.add_argument("--seed", type=int, default=0, help="the clips are a function of it (default 0)")
    ap.add_argument("--workers", type=int, default=0, help="encoding processes (default 0: one per usable core)")
    ap.add_argument("--force", action="store_true", help="regenerate even if an identical dataset exists; overwrite "
                    "lists (train.txt, val.txt, labels.csv) in a folder without dataset.json")
    ap.add_argument("--quiet", action="store_true", help="no progress (a bar on a terminal, else plain lines)")
    return ap


def _check_arguments(ap: ArgumentParser, args: argparse.Namespace) -> None:
    """Mistakes in the arguments are one line (``ap.error``: exit 2), before anything is written."""
    # A count of 0 would write an empty list (train.txt or val.txt) that no run can use.
    for flag, value, least in (("--train-per-class", args.train_per_class, 1),
                               ("--val-per-class", args.val_per_class, 1), ("--frames", args.frames, 1),
                               ("--workers", args.workers, 0), ("--gop", args.gop if args.gop is not None else 1, 1),
                               ("--seed", args.seed, 0)):
        if value < least:
            ap.error(f"{flag} must be >= {least}, got {value}")
    for flag, value in (("--train-per-class", args.train_per_class), ("--val-per-class", args.val_per_class)):
        if value > MAX_PER_CLASS:
            ap.error(f"{flag} must be <= {MAX_PER_CLASS}, got {value}")
    # The encoder keeps the rate as a fraction of 32-bit integers with a denominator of at most 1001: below 0.001
    # it rounded to 0, and inf or above 2**31 overflowed, a traceback from every encoding process.
    if not MIN_FPS <= args.fps <= MAX_FPS:
        ap.error(f"--fps must be between {MIN_FPS:g} and {MAX_FPS:g} frames per second, got {args.fps}")
    if not args.out:  # abspath("") is the current folder: the dataset was written there
        ap.error(output_path_problem(args.out, "--out", folder=True))
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        ap.error(f"--out {args.out} is an existing file, not a folder")
    if os.path.islink(args.out) and not os.path.exists(args.out):  # its folder cannot be made: "File exists"
        ap.error(f"--out {args.out} is a link to {os.readlink(args.out)}, which does not exist: make that folder, or "
                 "give another --out")


def _stop_lines(out: str) -> dict[str, str]:
    """What a stop leaves in ``out``, by the stage it came in: it depends on how far the work got (a complete
    dataset being checked was said to be incomplete)."""
    return {"starting": f"writing the synthetic dataset in {out}: nothing was written yet; run the same command "
                        "again",
            "checking": f"checking the synthetic dataset in {out}: it is complete and untouched; the same "
                        "command checks it again and reuses it",
            "writing": f"writing the synthetic dataset in {out}: it is incomplete (its dataset.json says so); the "
                       "same command keeps the clips finished and writes the rest"}


def _failure(args: argparse.Namespace, e: MissingEncoderError | NotEnoughMemoryError | OSError) -> str:
    """The one line (after "error: ") for a dataset that could not be made; nothing was written, or the clips
    finished are kept."""
    if isinstance(e, MissingEncoderError):  # nothing was written
        return f"--codec {args.codec}: {e}"
    if isinstance(e, NotEnoughMemoryError):  # nothing was written
        return _too_large(args, e)
    if isinstance(e, OtherDataError):  # lists of other data in --out
        return str(e.strerror)
    if isinstance(e, FileExistsError) and e.filename:  # a file where a class folder goes: was a bare "File exists"
        return (f"cannot write the synthetic dataset in {args.out}: {e.filename} stands where a folder goes (a file, "
                "or a link to nothing): move it away, or give another --out")
    # A read-only or full disk, a path through a file (checked only now: a complete dataset in a folder this process
    # cannot write is reused; and the error itself named the hidden temporary file beside dataset.json)
    problem = output_path_problem(args.out, "--out", folder=True)
    if problem:
        return problem
    full = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    return (f"cannot write the synthetic dataset in {args.out}: {e.strerror or e}"
            + (f" ({e.filename})" if e.filename else "")
            + ("; the clips finished are kept: free space, then run the same command" if full else ""))


def _print_summary(s: dict) -> None:
    what = "reused existing dataset" if s["skipped"] else f"wrote dataset in {s['seconds']:.1f} s"
    if not s["skipped"] and s["kept"]:  # a rerun said "wrote dataset" when it wrote one clip and kept the others
        what += f" ({counted(s['num_train'] + s['num_val'] - s['kept'], 'clip')} written, {s['kept']} kept)"
    print(f"{what}: {s['num_train']} train + {s['num_val']} val clips, {len(s['classes'])} classes "
          f"({', '.join(s['classes'])}), {counted(s['num_frames'], 'frame')} {s['size'][0]}x{s['size'][1]} "
          f"{s['codec']}")
    print(f"  videos:     {os.path.join(s['out_dir'], 'videos')}")
    print(f"  train list: {s['train_list']}")
    print(f"  val list:   {s['val_list']}")
    print(f"  labels:     {s['labels_csv']}")


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    _check_arguments(ap, args)
    kept, said = _stop_lines(args.out), []

    def stage(name: str) -> None:
        said.append(kept[name])
        on_interrupt(kept[name])

    stage("starting")
    # A batch scheduler's stop (SIGTERM, SIGUSR1) ends the work as a Ctrl-C does (the workers ended, the clips
    # half-written removed, the finished ones recorded), with one line and the exit code of a stopped training run.
    done = False
    with stop_signals_raise(ignored=lambda: done):
        try:
            s = make_synthetic_dataset(args.out, codec=args.codec, train_per_class=args.train_per_class,
                                       val_per_class=args.val_per_class, num_frames=args.frames, size=args.size,
                                       fps=args.fps, gop=args.gop, seed=args.seed, workers=args.workers,
                                       progress=not args.quiet, force=args.force, on_stage=stage)
        except Stopped as e:
            return stopped_during_work(e, said[-1])
        except (MissingEncoderError, NotEnoughMemoryError, OSError) as e:  # OtherDataError: an OSError
            print(f"error: {_failure(args, e)}", file=sys.stderr)
            return 2
        done = True  # the dataset is whole: a stop signal while its summary is printed changes nothing
        _print_summary(s)
    return 0


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(finished(stdout_may_close(main)))  # a closed stdout stops no work; after its last line, nor a Ctrl-C
