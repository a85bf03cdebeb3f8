#!/usr/bin/env python
"""Prepare Kinetics for training: file lists, label CSVs, Kinetics-722 and short-GOP H.264 re-encoding.

Subcommands (each accepts --dry-run, which prints what would be written and writes nothing):

  lists     per-dataset lists and labels from class-folder trees <root>/{train,val}/<class name>/<video>, or
            from the flat layout of the official downloads (below), train and val de-duplicated by YouTube id
            (first occurrence kept) and training videos whose YouTube id is in the dataset's val list removed
            (--keep-duplicates, --keep-leaked switch these off):
              python tools/prepare_kinetics.py lists --dataset k400=data/k400 --out data/
            -> data/k400_train.txt, data/k400_val.txt, data/k400_labels.csv, data/k400_report.{json,md}
            with --check every video is probed as the training index probes it, unusable ones are left out, and
            each list comes with its index cache (data/k400_train.txt.index.npz, ...): the first training run
            reuses it and probes no video again (one that changes after the check is probed again); a later
            --check into the same --out probes only the videos that are new or changed since (delete the
            *.index.npz files there to probe every video again); a check stopped by Ctrl-C, SIGTERM or SIGUSR1 saves
            the videos probed so far (<out>/<name>_check_interrupted.txt.index.npz) and the same command probes
            only the rest (so does a check ended by an error after some probes, once the command is fixed)

  k722      the merged Kinetics-722 (class union, training videos de-duplicated by YouTube id, every training
            video whose YouTube id is in any given validation split removed) and the class mappings that select
            each dataset's head rows from the 722-way head (MODEL.CLASS_MAPPING):
              python tools/prepare_kinetics.py k722 --dataset k400=data/k400 --dataset k600=data/k600 \\
                  --dataset k700=data/k700 --out data/
            -> k722_{train,val}.txt, k722_labels.csv, k722_to_k{400,600,700}_mapping.npy, k722_report.{json,md},
               and each dataset's own lists (unless --no-dataset-lists)

  reencode  re-encode a tree to H.264 (CFR, short side N, keyframe every G frames, no B-frames, +faststart), the
            main throughput lever for NVDEC; resumable (a source changed since its output was written, in size
            or mtime, is encoded again), verified, originals never touched:
              python tools/prepare_kinetics.py reencode --src data/k400 --dst data/k400_h264 --workers 8
            then build lists from the new root (of a flat download with --annotations NAME=<src>/annotations: only
            videos are written). Full-range sources (yuvj420p, e.g. MJPEG) are converted to the
            output's limited range; resuming into a --dst with settings that none of the earlier runs whose
            videos are in it used (reencode_report.json's settings_used keeps them all, and so does the
            hidden .reencode_settings.json in --dst, whatever --report-dir is) is refused
            (--allow-other-settings mixes them).

The official downloads are flat: <root>/{train,val}/<youtube_id>_<start:06d>_<end:06d>.mp4, the classes in
<root>/annotations/{train,val}.csv (label,youtube_id,time_start,time_end,split[,is_cc]; without val.csv, the
validate.csv of Kinetics-700-2020's download is read, with a note). A dataset whose split
folders hold videos and no subfolders is read that way, each video's class and split taken from the CSV row that
names its file (a video of val.csv saved in train/ is a validation video; a file named <youtube_id>.mp4 is the
video of the one row of that id); --annotations names other CSVs, per
dataset, so several --dataset of either layout mix:
              python tools/prepare_kinetics.py k722 --dataset k400=data/k400 --dataset k700=data/k700 \\
                  --annotations k700=data/k700_annotations --out data/
The lists are those of a class-folder tree of the same videos. CSV rows without a video file are reported as
"missing" and video files no row names as "not in annotations" (--strict: an error; missing rows never are); a
video in both CSVs is listed in the split whose folder holds it, the other row counted as "listed in the other split".

A SIGTERM or SIGUSR1 (a batch scheduler's stop) ends any subcommand as a Ctrl-C does, with one `stopped:` line and
exit code 4.

List paths are relative to --data-root (default: --out), which is what DATA.ROOT must be set to. Labels are the
position of the class in the sorted class names (Kinetics-722: in the sorted union); for k400, k600 and k700 the
class folders (or annotated classes) must be as many as the official classes, and with --official-labels DIR (the
released label files) those classes (--allow-empty-classes: a missing one keeps its id, with no videos).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evautil.interrupt import (STARTING, STOPPED_EXIT_STATUS, Stopped, finished, on_interrupt,  # noqa: E402
                               stop_signals_raise, stopped_during_work)

if __name__ == "__main__":  # a Ctrl-C or a stop signal during the imports below is one line too
    on_interrupt(STARTING, stop_status=STOPPED_EXIT_STATUS)

from evautil.cli import flags_as_typed  # noqa: E402
from evautil.files import output_path_problem  # noqa: E402
from evautil.progress import stderr_is_terminal  # noqa: E402
from evautil.workers import usable_cpus  # noqa: E402
from tools.kinetics import (  # noqa: E402
    CLASS_ALIASES, EncodeSettings, KineticsError, prepare_k722, prepare_lists, reencode_tree,
)
from tools.kinetics.annotations import split_csvs, val_csv_absent  # noqa: E402
from tools.kinetics.reencode import REENCODE_TIME_LIMIT_S, default_dst  # noqa: E402
from tools.kinetics.scan import check_output_name, finish_scan, save_checked, walk_dataset  # noqa: E402
from tools.kinetics.video_files import in_other_case  # noqa: E402
from tools.kinetics.video_names import printable_path  # noqa: E402


def _dataset_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (e.g. k400=data/k400), got {text!r}")
    return name, path


def _annotations_arg(text: str) -> tuple[str, str | None, str]:
    target, sep, path = text.partition("=")
    name, colon, split = target.partition(":")
    if not sep or not name or not path or (colon and split not in ("train", "val")):
        raise argparse.ArgumentTypeError(f"expected NAME=DIR (DIR/train.csv and DIR/val.csv) or NAME:SPLIT=CSV "
                                         f"with SPLIT train or val (e.g. k700:val=data/validate.csv), got {text!r}")
    return name, split or None, path


def _add_scan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", action="append", type=_dataset_arg, required=True, metavar="NAME=PATH",
                   help="dataset name (output prefix, e.g. k400) and root holding train/ and val/ (class folders, "
                        "or the official downloads' flat folders of videos with annotations/); repeatable, order "
                        "matters for k722 (first occurrence of a YouTube id wins)")
    p.add_argument("--annotations", action="append", type=_annotations_arg, default=[],
                   metavar="NAME=DIR|NAME:SPLIT=CSV",
                   help="annotation CSVs (label,youtube_id,time_start,time_end,...) of dataset NAME, whose split "
                        "folders are then flat folders of <youtube_id>_<start:06d>_<end:06d>.<ext> videos, each "
                        "given its class and split by the row naming it: NAME=DIR for DIR/train.csv and "
                        "DIR/val.csv (or DIR/validate.csv, Kinetics-700-2020's name), NAME:train=CSV or NAME:val=CSV "
                        "for one split (the other: <root>/annotations/<split>.csv); repeatable. Without it a "
                        "dataset whose split folders hold videos and no subfolders is read so, with "
                        "<root>/annotations/{train,val}.csv")
    p.add_argument("--out", default="data", help="output directory (default: data)")
    p.add_argument("--data-root", default=None,
                   help="directory the list paths are relative to, i.e. DATA.ROOT (default: --out)")
    p.add_argument("--train-dir", default="train", help="name of the training split folder (default: train)")
    p.add_argument("--val-dir", default="val", help="name of the validation split folder (default: val)")
    p.add_argument("--underscore-to-space", action="store_true",
                   help="class name = folder name (or annotation label) with '_' replaced by ' ' (the released "
                        "heads use spaces)")
    p.add_argument("--check", action="store_true",
                   help="probe every video as the training index does (frame count, codec, size, first frame "
                        "decodes, not truncated); unusable files are skipped and reported, and each list is "
                        "written with its index cache (<list>.index.npz), so training probes none of them again; "
                        "videos those caches in --out already record unchanged (size, mtime) are not probed again")
    p.add_argument("--workers", type=int, default=usable_cpus(),
                   help="processes for --check (default: all cores)")
    p.add_argument("--strict", action="store_true",
                   help="unusable video files (and video files no annotation row names) are an error instead of "
                        "skipped; annotated videos without a file never are")
    p.add_argument("--allow-empty-classes", action="store_true",
                   help="accept class folders without usable videos (an error by default); for k400/k600/k700 "
                        "with --official-labels also official classes without a folder: every label keeps its "
                        "official id")
    p.add_argument("--official-labels", default=None, metavar="DIR",
                   help="folder with the released label files (kinetics400_labels.csv, kinetics600_labels.csv, "
                        "kinetics700_labels.csv, or k400_labels.csv ...): k400/k600/k700 class folders must be "
                        "those classes (without it only their count is checked)")
    _add_no_progress(p, "every 30 s while --check probes, and while a long search for videos goes on")
    p.add_argument("--dry-run", action="store_true", help="print what would be written; write nothing")


def _add_no_progress(p: argparse.ArgumentParser, when: str) -> None:
    """``--no-progress`` of each subcommand that shows its progress (``when``)."""
    p.add_argument("--no-progress", action="store_true",
                   help="no progress: neither the bar (on a terminal) nor the plain lines written without one "
                        f"({when}); the summary and errors still print")


def _add_cleaning_args(p: argparse.ArgumentParser) -> None:
    # The original notebook's per-dataset rule, on by default for every dataset (it skipped the K400 leak step).
    p.add_argument("--keep-duplicates", action="store_true",
                   help="per-dataset lists: keep repeated YouTube ids (default: first occurrence kept)")
    p.add_argument("--keep-leaked", action="store_true",
                   help="per-dataset lists: keep training videos whose YouTube id is in the dataset's own val list "
                        "(default: removed)")
    p.add_argument("--drop-leaked", action="store_true", help="the default; accepted for older command lines")


def _annotation_args(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """``{dataset name: {split: CSV}}`` from the --annotations options."""
    names = [n for n, _ in args.dataset]
    files: dict[str, dict[str, str]] = {}
    for name, split, path in args.annotations:
        given = f"--annotations {name}{':' + split if split else ''}={path}"
        if name not in names:
            raise KineticsError(f"{given}: no --dataset is named {name!r} (datasets: {', '.join(names)})")
        if split is None and not os.path.isdir(path):
            raise KineticsError(f"{given}: not a folder (NAME=DIR names DIR/train.csv and DIR/val.csv; one split's "
                                f"CSV: --annotations {name}:train=CSV or {name}:val=CSV)")
        new = {split: path} if split else split_csvs(path, name)
        if not split and not os.path.isfile(new["val"]):
            other = in_other_case(new["val"], "file")  # VAL.csv
            how = (f"{other!r} is there, its name in another case: rename it val.csv" if other else
                   f"name each split's CSV with --annotations {name}:train=CSV and --annotations {name}:val=CSV")
            raise KineticsError(f"{given}: {val_csv_absent(path)}; {how}")
        for s, csv_path in new.items():
            if s in files.setdefault(name, {}):
                raise KineticsError(f"{given}: the {s} annotation CSV of {name} is already {files[name][s]!r}")
            files[name][s] = csv_path
    return files


def _scan_all(args: argparse.Namespace) -> list:
    names = [n for n, _ in args.dataset]
    if len(set(names)) != len(names):
        raise KineticsError(f"--dataset names must be unique, got {names}")
    if args.command == "k722":  # before any scan: the merge's files are named after it
        check_output_name(args.name, "--name")
        if args.name in names and not args.no_dataset_lists:
            raise KineticsError(f"--name {args.name}: the merged lists, labels and report would replace those of "
                                f"--dataset {args.name} in {args.out} ({args.name}_train.txt ...); give the merge "
                                f"another --name, or pass --no-dataset-lists")
    annotations = _annotation_args(args)
    before = None
    if args.check:  # what an earlier check into --out recorded: its unchanged videos are not probed again
        from dali_pipelines.index import probed_before

        caches = sorted(glob.glob(os.path.join(glob.escape(args.out), "*.index.npz")))
        before = probed_before(caches, _roots_now(args, caches))
    scans = []
    try:
        # every dataset walked first: what its folders or CSVs alone refuse (a later --dataset's missing CSV or
        # empty class) is said before the first probe, not after hours of the earlier datasets' probes
        walked = [walk_dataset(n, path, train_dir=args.train_dir, val_dir=args.val_dir,
                               underscore_to_space=args.underscore_to_space, strict=args.strict,
                               allow_empty_classes=args.allow_empty_classes, progress_lines=not args.no_progress,
                               official_labels=args.official_labels, annotations=annotations.get(n))
                  for n, path in args.dataset]
        for w in walked:
            scans.append(finish_scan(w, check=args.check, workers=args.workers,
                                     progress=not args.no_progress and stderr_is_terminal(),
                                     progress_lines=not args.no_progress, before=before,
                                     partial_list=None if args.dry_run else _partial_list(args, w.name)))
    except (KeyboardInterrupt, Stopped):  # the datasets checked before the one that stopped keep their probes
        # too (on Kinetics hours of them): the same command probes only the rest
        if args.check and not args.dry_run:
            for s in scans:
                save_checked(s.name, s.root, s.probes, s.probe_rows, _partial_list(args, s.name))
            args.stopped_in_scan = True
            on_interrupt(_interrupted(args))  # what was saved is known now
        raise
    except (KineticsError, OSError) as e:  # the probes kept for the fixed command: the earlier datasets' here, the
        if args.check and not args.dry_run:  # failing one's by finish_scan
            _keep_probes(args, scans, getattr(e, "probes_kept", False))
            args.stopped_in_scan = True
            on_interrupt(_interrupted(args))
        raise
    return scans


def _keep_probes(args: argparse.Namespace, scans: list, saved: bool = False) -> None:
    """After an error, save the probes of ``scans`` as a stop does; ``args.probes_kept`` says whether any were
    saved (these, or others already: ``saved``), for the error line (``_probes_kept``)."""
    try:
        for s in scans:
            save_checked(s.name, s.root, s.probes, s.probe_rows, _partial_list(args, s.name), quiet=True)
    except Exception:  # not saved either (the disk is full): the error itself, not this one, says what to fix
        pass
    else:
        args.probes_kept = saved or any(s.probes is not None and len(s.probes) for s in scans)


def _write_lists(args: argparse.Namespace, scans: list) -> None:
    """Write the lists, labels and reports of ``scans`` (and the merge, for k722), and with --check the lists' index
    caches; ``args.written`` names the files written so far, for the line a stop on the way ends with."""
    args.written = []
    try:
        if args.command == "lists" or not args.no_dataset_lists:
            prepare_lists(scans, args.out, args.data_root, dedup=not args.keep_duplicates,
                          drop_leaked=not args.keep_leaked, dry_run=args.dry_run, written=args.written)
        if args.command == "k722":
            prepare_k722(scans, args.out, args.data_root, name=args.name,
                         aliases=None if args.no_aliases else CLASS_ALIASES, dry_run=args.dry_run,
                         written=args.written)
    except (KeyboardInterrupt, Stopped):  # the lists not yet written had the probes of their videos only in memory
        if args.check and not args.dry_run:
            for s in scans:
                save_checked(s.name, s.root, s.probes, s.probe_rows, _partial_list(args, s.name))
            on_interrupt(_interrupted(args))  # what was written and saved is known now
        raise
    except (KineticsError, OSError):  # a full disk, a list's name a folder takes: the probes kept as on a stop,
        if args.check and not args.dry_run:  # for the command run again once that is fixed
            _keep_probes(args, scans)
        raise
    if args.check and not args.dry_run:
        _remove_partial_caches(args)


def _probes_saved(args: argparse.Namespace) -> str:
    """Where a --check stopped, or failed, with probes not yet in written lists keeps them, and what the rerun
    does."""
    return (f"the usable videos probed are saved in {args.out}/*_check_interrupted.txt.index.npz, and the same "
            f"command probes none of them again")


def _probes_kept(args: argparse.Namespace) -> str:
    """What an error line adds when the scan or the lists' write failed and probes were saved ("" when none
    were)."""
    return f"; {_probes_saved(args)}" if getattr(args, "probes_kept", False) else ""


def _partial_list(args: argparse.Namespace, name: str) -> str:
    """The list path whose index cache (``<out>/<name>_check_interrupted.txt.index.npz``) keeps the videos an
    interrupted --check probed; the next check finds it among --out's *.index.npz and probes only the rest."""
    return os.path.join(args.out, f"{name}_check_interrupted.txt")


def _roots_now(args: argparse.Namespace, caches: list[str]) -> dict[str, str]:
    """The root each index cache in --out is read under now, for a data root or dataset moved since an earlier
    check: the lists' caches' paths are relative to the data root, an interrupted check's to its dataset's root."""
    partial = {_partial_list(args, n) + ".index.npz": os.path.abspath(path) for n, path in args.dataset}
    return {c: partial.get(c, os.path.abspath(args.data_root or args.out)) for c in caches}


def _remove_partial_caches(args: argparse.Namespace) -> None:
    """After a finished check: the lists' own caches now hold every probed video."""
    from dali_pipelines.index import index_paths

    for name, _ in args.dataset:
        paths = index_paths(_partial_list(args, name))
        for path in (paths.cache, paths.lock):
            if os.path.exists(path):
                os.unlink(path)


def build_parser() -> argparse.ArgumentParser:
    from evautil.cli import ArgumentParser  # its subcommands' parsers are of its class too

    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lists", help="per-dataset lists and label CSVs")
    _add_scan_args(p)
    _add_cleaning_args(p)

    p = sub.add_parser("k722", help="merged Kinetics-722 lists, labels, class mappings and report")
    _add_scan_args(p)
    p.add_argument("--name", default="k722",
                   help="output prefix of the merged dataset (default: k722): letters, digits, '-' and '_', and no "
                        "--dataset's name unless --no-dataset-lists")
    renames = "; ".join(f"{a!r} -> {b!r}" for a, b in CLASS_ALIASES.items())
    p.add_argument("--no-aliases", action="store_true", help=f"do not merge renamed classes ({renames})")
    p.add_argument("--no-dataset-lists", action="store_true",
                   help="write only the merged outputs, not each dataset's own lists")
    _add_cleaning_args(p)

    p = sub.add_parser("reencode", help="re-encode a video tree to short-GOP H.264 for fast NVDEC decoding")
    p.add_argument("--src", required=True, help="source root (searched recursively for videos)")
    p.add_argument("--dst", default=None, help="destination root (default: <src>_h264 beside the source)")
    p.add_argument("--short-side", type=int, default=320, help="output short side in pixels (default: 320)")
    p.add_argument("--gop", type=int, default=16, help="keyframe every N frames (default: 16)")
    p.add_argument("--crf", type=int, default=23, help="x264 CRF quality, lower = better/larger (default: 23)")
    p.add_argument("--preset", default="veryfast", help="x264 preset (default: veryfast)")
    p.add_argument("--no-upscale", action="store_true", help="do not enlarge videos smaller than --short-side")
    p.add_argument("--workers", type=int, default=usable_cpus(),
                   help="parallel encoder processes (default: all cores)")
    p.add_argument("--threads", type=int, default=1, help="x264 threads per worker (default: 1)")
    p.add_argument("--time-limit", type=float, default=REENCODE_TIME_LIMIT_S, metavar="SECONDS",
                   help=f"per video: a re-encode that takes longer (a decode that never "
                        f"ends) is ended, reported as failed and leaves no output, and the others go on; 0: no limit "
                        f"(default: {REENCODE_TIME_LIMIT_S:g})")
    p.add_argument("--report-dir", default=None, help="where reencode_report.{json,md} go (default: --dst)")
    _add_no_progress(p, "every 30 s, and while a long search for videos goes on")
    p.add_argument("--allow-other-settings", action="store_true",
                   help="resume into a --dst with settings that no earlier run whose videos are in it used (their "
                        "settings: reencode_report.json's settings_used, kept over every run and in --dst's "
                        ".reencode_settings.json; refused by default: "
                        "the tree would mix encodings)")
    p.add_argument("--dry-run", action="store_true", help="print what would be re-encoded; write nothing")
    return ap


def _interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C during ``args.command`` leaves behind."""
    if args.command == "reencode":
        return ("re-encoding: the videos finished so far are kept (a video gets its name only when finished); "
                "the same command skips them and goes on with the rest")
    if args.check and not args.dry_run and getattr(args, "written", None) is not None:  # stopped after the scan
        names = [os.path.basename(p) for p in args.written]
        wrote = (f"wrote {', '.join(names[:6])}{' ...' if len(names) > 6 else ''} and not the rest"
                 if names else "wrote no file yet")
        if not glob.glob(os.path.join(glob.escape(args.out), "*_check_interrupted.txt.index.npz")):
            return f"{args.command} --check: stopped while writing the lists: {wrote}; run the same command again"
        return (f"{args.command} --check: stopped while writing the lists: {wrote}; {_probes_saved(args)} and "
                f"writes every file")
    if args.check and not args.dry_run:
        saved = [n for n, _ in args.dataset if os.path.isfile(_partial_list(args, n) + ".index.npz")]
        if getattr(args, "stopped_in_scan", False) and not saved:  # before a probe: no such file to look for
            return (f"{args.command} --check: no list was written and no video was probed yet; run the same "
                    f"command again")
        return (f"{args.command} --check: no list was written; the videos probed so far are saved in "
                f"{args.out}/*_check_interrupted.txt.index.npz, and the same command probes only the rest")
    return (f"{args.command}: no file in {args.out} is half-written (each is written whole, after the scan), but "
            "the set may be incomplete; run the same command again")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some re-encodes failed, 2 bad input, 4 stopped by SIGTERM or
    SIGUSR1)."""
    args = build_parser().parse_args(argv)
    on_interrupt(_interrupted(args))
    # A batch scheduler's stop (SIGTERM, SIGUSR1) ends the work as a Ctrl-C does (the re-encode report written,
    # .part files removed), with one line and the exit code of a stopped training run.
    with stop_signals_raise():
        try:
            return _run(args)
        except Stopped as e:
            return stopped_during_work(e, _interrupted(args))


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse an output folder that cannot be written before any video is scanned, probed or encoded (each took
    its time, then a traceback)."""
    if args.command == "reencode":
        dst = args.dst or default_dst(args.src)
        targets = [("--dst", dst), ("--report-dir", args.report_dir)]
    else:
        targets = [("--out", args.out)]
    for flag, path in targets:
        problem = path and output_path_problem(path, flag, folder=True)
        if problem:
            raise KineticsError(problem)


def _run(args: argparse.Namespace) -> int:
    try:
        _check_outputs(args)  # a --dry-run too: it would stop there
        if args.workers < 1:  # every subcommand's: lists --check took 0 or -2 for 1 without a word
            raise KineticsError(f"--workers must be >= 1, got {args.workers}")
        if args.command in ("lists", "k722"):
            _write_lists(args, _scan_all(args))
        else:
            for flag, v in (("--short-side", args.short_side), ("--gop", args.gop), ("--threads", args.threads)):
                if v < 1:
                    raise KineticsError(f"{flag} must be >= 1, got {v}")
            if args.time_limit < 0:
                raise KineticsError(f"--time-limit must be >= 0 seconds (0: no limit), got {args.time_limit:g}")
            if not 0 <= args.crf <= 51:  # x264's range for 8-bit video; above it libx264 clamps to 51 silently
                raise KineticsError(f"--crf must be 0..51 (x264's quality scale, lower = better), got {args.crf}")
            settings = EncodeSettings(short_side=args.short_side, gop=args.gop, crf=args.crf, preset=args.preset,
                                      threads=args.threads, no_upscale=args.no_upscale)
            report = reencode_tree(args.src, args.dst, settings, workers=args.workers, dry_run=args.dry_run,
                                   progress=not args.no_progress and stderr_is_terminal(), report_dir=args.report_dir,
                                   allow_other_settings=args.allow_other_settings, progress_lines=not args.no_progress,
                                   time_limit_s=args.time_limit)
            if report["failed"]:
                for x in report["failed"][:20]:
                    print(f"failed: {printable_path(x['error'])}", file=sys.stderr)  # one line, a name's break too
                return 1
    except KineticsError as e:
        print(f"error: {flags_as_typed(e, args)}{_probes_kept(args)}", file=sys.stderr)  # --short_side, if so typed
        return 2
    except OSError as e:  # e.g. a write that fails on the way (a full disk), whose error names no file
        # a failed rename names its temporary source first: the file it was to become is filename2
        where = e.filename2 or e.filename or (
            args.out if args.command != "reencode" else args.report_dir or args.dst or args.src)
        print(f"error: {where}: {e.strerror or e}{_probes_kept(args)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(finished(stdout_may_close(main)))  # a closed stdout stops no work; after its last line, nor a Ctrl-C
