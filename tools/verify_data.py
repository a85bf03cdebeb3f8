#!/usr/bin/env python
"""Check a dataset without training: index every video of one or more lists (probing in parallel, with a progress
bar) and report per list the counts, codecs, frame sizes, frame counts, bytes on disk and every unreadable video
with its reason (also written to <list>.quarantine.txt). Exit code 0 when every video is readable, 1 when any is
not, 2 for unusable input (a missing or malformed list, a bad config) or a cache the disk refuses (one line naming
it), 4 when stopped by SIGTERM or SIGUSR1 (a batch scheduler's stop: the videos probed so far are saved, and the
same command probes only the rest).

    python tools/verify_data.py --cfg configs/k722.yaml                # the config's train and val lists
    python tools/verify_data.py data/k400_train.txt data/k400_val.txt --root data/ --workers 32
    python tools/verify_data.py --cfg configs/k400.yaml --dry-run      # config, model and list format only

The results are cached beside each list (<list>.index.npz; where the list's folder is not writable, in
$XDG_CACHE_HOME/eva_dali_video/, ~/.cache/eva_dali_video/ by default), so the training run that follows does not
probe the videos again. --dry-run parses the lists and, with --cfg, checks the config and builds the model (without
allocating its weights), then stops before any video is opened.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time

# Runnable as `python tools/verify_data.py` from the repo root without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evautil.interrupt import (STARTING, STOPPED_EXIT_STATUS, Stopped, finished, on_interrupt,  # noqa: E402
                               stop_signals_raise, stopped_during_work)

if __name__ == "__main__":  # a Ctrl-C or a stop signal during the imports below is one line too
    on_interrupt(STARTING, stop_status=STOPPED_EXIT_STATUS)

from configs import ConfigError, load_config  # noqa: E402
from dali_pipelines.filelist import DataError, check_list_root, list_root, read_video_list  # noqa: E402
from dali_pipelines.index import PROBE_TIMEOUT_S, build_index, progress_lines_on_stderr  # noqa: E402
from evautil.cli import ArgumentParser, flags_as_typed  # noqa: E402
from evautil.files import write_failure  # noqa: E402
from evautil.flops import model_size_text  # noqa: E402
from evautil.progress import counted, format_bytes, stderr_is_terminal  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0],
                        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lists", nargs="*", help="video lists ('<relative path> <label>' per line)")
    ap.add_argument("--cfg", "--config", dest="cfg", default=None,
                    help="a training config: its DATA.TRAIN_FILE and DATA.VAL_FILE (and DATA.ROOT, classes)")
    ap.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                    help="KEY VALUE config overrides (with --cfg; other flags may follow them)")
    ap.add_argument("--root", default=None, help="folder the lists' paths are relative to (default: DATA.ROOT "
                                                 "with --cfg, else each list's folder)")
    ap.add_argument("--num-classes", type=int, default=None, help="labels must lie in [0, N) (default: "
                                                                   "DATA.NUM_CLASSES with --cfg)")
    ap.add_argument("--workers", type=int, default=0, help="probing processes (0, the default: every core)")
    ap.add_argument("--video-timeout", type=float, default=None, metavar="S",
                    help="the longest one video's probe may take; a video that takes longer (twice) is reported "
                         "unreadable this time only (default: DATA.VIDEO_TIMEOUT_S with --cfg, else "
                         f"{PROBE_TIMEOUT_S:g}; 0: no limit); it holds one worker too (--workers 1, or 0 with "
                         "one usable core: one worker process), and with 0 that worker probes in this process")
    ap.add_argument("--full-decode", action="store_true",
                    help="decode every frame (slow; also finds corruption in the middle of a stream)")
    ap.add_argument("--dry-run", action="store_true", help="check config, model and list format; open no video")
    from configs import opts_last

    args = ap.parse_args(opts_last(ap, ap.respelled(argv)))
    # --root "$DATA" with DATA unset: the lists' own folders were used and said to be "no --root given"; --cfg
    # "$CFG" beside lists: the config was ignored
    for flag, value in (("--root", args.root), ("--cfg", args.cfg)):
        if value == "":
            ap.error(f"{flag} is empty; give a {'folder' if flag == '--root' else 'config file'}, or leave {flag} out")
    if not args.lists and not args.cfg:
        ap.error("give video lists, or --cfg for the lists of a training config")
    if args.num_classes is not None and args.num_classes < 1:  # else every line was "label 0 is outside [0, 0)"
        ap.error(f"--num-classes {args.num_classes}: give the number of classes (labels lie in [0, N)), at least 1")
    if args.workers < 0:
        ap.error(f"--workers {args.workers}: give a number of processes, or 0 for every core")
    if args.video_timeout is not None and not args.video_timeout >= 0:  # also refuses nan
        ap.error(f"--video-timeout {args.video_timeout:g}: give seconds, or 0 for no limit")
    if args.opts and not args.cfg:  # they were ignored: a DATA.ROOT given there did not apply
        ap.error(f"--opts overrides keys of --cfg, and no --cfg is given ({' '.join(args.opts)}); without a config "
                 "use --root and --num-classes")
    return args


def _config(args: argparse.Namespace):
    """The --cfg config, loaded and validated (with its DATA.LABEL_LIST when there is one); None without --cfg.
    Its DATA.VIDEO_TIMEOUT_S becomes ``args.video_timeout`` when that is not given."""
    if not args.cfg:
        return None
    from engine.evaluate import names_given_twice, read_label_names  # imported already (see main)

    cfg = load_config(args.cfg, args.opts)
    if os.path.isfile(cfg.DATA.LABEL_LIST):  # only the lists must exist here: a missing one is train.py's concern
        same_names = names_given_twice(cfg.DATA.LABEL_LIST, read_label_names(cfg.DATA.LABEL_LIST,
                                                                             cfg.DATA.NUM_CLASSES))
        if same_names:  # the warning train.py and predict give
            print(f"warning: {same_names}", file=sys.stderr)
    if args.video_timeout is None:
        args.video_timeout = float(cfg.DATA.VIDEO_TIMEOUT_S)
    return cfg


def _targets(args: argparse.Namespace, cfg) -> list[tuple[str, str, int | None]]:
    """``(list, root, num_classes)`` to verify: the lists given, else ``cfg``'s (refused when missing, named by
    key with what makes them, as train.py names them)."""
    if cfg is None:
        return [(p, list_root(p, args.root), args.num_classes) for p in args.lists]
    lists = args.lists or [p for p in (cfg.DATA.TRAIN_FILE, cfg.DATA.VAL_FILE) if p]
    if not lists:
        raise ConfigError(f"{args.cfg}: DATA.TRAIN_FILE and DATA.VAL_FILE are empty: no list to verify")
    missing = [f"{key} = {path}" for key, path in (("DATA.TRAIN_FILE", cfg.DATA.TRAIN_FILE),
                                                     ("DATA.VAL_FILE", cfg.DATA.VAL_FILE))
               if not args.lists and path and not os.path.isfile(path)]
    if missing:
        from engine.preflight import where_they_come_from

        raise ConfigError(f"{args.cfg}: missing video lists: {'; '.join(missing)}{where_they_come_from(missing)}")
    classes = args.num_classes or cfg.DATA.NUM_CLASSES
    return [(p, args.root or cfg.DATA.ROOT, classes) for p in lists]


def _each_once(targets: list[tuple[str, str, int | None]]) -> tuple[list[tuple[str, str, int | None]], list[str]]:
    """``targets`` without the repeats of a list (the same file, root and classes: a list given twice, or a config
    whose DATA.TRAIN_FILE is its DATA.VAL_FILE), and the lists that were repeated. Each was verified twice and
    counted twice in the total, its videos too."""
    once, repeated, seen = [], [], set()
    for list_path, root, classes in targets:
        key = (os.path.realpath(list_path), os.path.realpath(root), classes)
        if key in seen:
            repeated.append(list_path)
        else:
            seen.add(key)
            once.append((list_path, root, classes))
    return once, repeated


def check_model(cfg_path: str, opts: list[str]) -> str:
    """Build the config's model on the meta device (no memory for weights); one line describing it."""
    from models import build_model, forward_flops

    cfg = load_config(cfg_path, opts)
    model = build_model(cfg, device="meta")
    params = sum(p.numel() for p in model.parameters())
    clip = f"{cfg.DATA.NUM_FRAMES}x{cfg.DATA.INPUT_SIZE}x{cfg.DATA.INPUT_SIZE} clip"
    size = model_size_text(params, forward_flops(model), clip)
    return f"model {cfg.MODEL.ARCH}: {size}, {cfg.DATA.NUM_CLASSES} classes"


def _bytes_on_disk(index) -> int:
    """Bytes of the readable videos: their sizes as probed (the index reuses a row only while the size holds), each
    file once however many lines name it (a repeated line is an entry of its own, not more bytes on disk)."""
    once = index.good_mask  # a copy
    for rows in index.videos.repeated():
        once[rows[1:]] = False
    return int(index.table.columns["size"][once].sum())


def verify(targets: list[tuple[str, str, int | None]], workers: int, full_decode: bool,
           timeout_s: float = PROBE_TIMEOUT_S, root_name: str = "--root", classes_name: str = "--num-classes") -> int:
    """Index every list and print its report; returns the number of unreadable videos over all lists.
    ``root_name``: the option that set the lists' root, named when none of a list's videos is found;
    ``classes_name``: the option or key that set the number of classes, named with a label outside it."""
    bad_total = videos_total = 0
    for list_path, root, classes in targets:
        t0 = time.perf_counter()
        index = build_index(list_path, root, classes, workers=workers, full_decode=full_decode,
                            progress=stderr_is_terminal(), timeout_s=timeout_s, root_name=root_name,
                            classes_name=classes_name)
        seconds = time.perf_counter() - t0
        print(index.summary())
        print(f"  {format_bytes(_bytes_on_disk(index))} of readable video; indexed in {seconds:.1f} s")
        bad_total += len(index.bad)
        videos_total += len(index.entries)
    verdict = "all readable" if not bad_total else f"{bad_total} unreadable (see the lists above)"
    print(f"verified {counted(len(targets), 'list')}, {counted(videos_total, 'video')}: {verdict}")
    return bad_total


def _import_model_code() -> None:
    """Import what --cfg checks need (torch with them) while a Ctrl-C or a stop signal still ends the start at once:
    one raised inside torch's import could abort the process (evautil.interrupt). Not at the top of the file: the
    probing workers import this script again, and need no torch."""
    import engine.evaluate  # noqa: F401
    import models  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cfg:
        _import_model_code()
    kept = "the videos probed so far are saved in each list's <list>.index.npz; the same command probes only the rest"
    on_interrupt(f"verifying the lists: {kept}")
    # The report below names every bad video with its reason; the index's own warnings would repeat them. Its
    # progress lines stay (a first build of a Kinetics list takes many minutes; a bar shows it on a terminal).
    # (For this call only: main called in a process that goes on, as a test does, keeps its logging as it was.)
    pipeline_logger = logging.getLogger("dali_pipelines")
    level_before = pipeline_logger.level
    pipeline_logger.setLevel(logging.ERROR)
    # A batch scheduler's stop (SIGTERM, SIGUSR1) ends the work as a Ctrl-C does, the index builds saving what they
    # probed, with one line and the exit code of a stopped training run.
    try:
        with stop_signals_raise():
            try:
                return _verify_lists(args)
            except Stopped as e:
                return stopped_during_work(e, kept)
    finally:
        pipeline_logger.setLevel(level_before)


def _verify_lists(args: argparse.Namespace) -> int:
    try:
        cfg = _config(args)
        if cfg is not None:  # the model is checked whether or not the lists exist yet
            print(check_model(args.cfg, args.opts))
        targets, repeated = _each_once(_targets(args, cfg))
        for list_path in repeated:
            print(f"list {list_path}: given more than once, verified once")
        root_name = "DATA.ROOT" if args.cfg and not args.root else "--root"
        classes_name = "DATA.NUM_CLASSES" if args.cfg and args.num_classes is None else "--num-classes"
        # without --cfg or --root: each list's folder, not called "--root = ..." as if the flag had been given
        default = "the list's own folder" if not args.cfg and not args.root else ""
        for list_path, root, classes in targets:  # format and labels of every list before any video is opened
            videos = read_video_list(list_path, root, classes, classes_name=classes_name)
            check_list_root(videos, root_name, default=default)
            print(f"list {list_path}: {counted(len(videos), 'video')}, well-formed")
        if args.dry_run:  # without --cfg there is no config or model to vouch for
            checked = "config, model and lists are valid" if cfg is not None else \
                "the lists are well-formed (no --cfg: no config or model was checked)"
            print(f"dry run: {checked}; no video was opened")
            return 0
        with progress_lines_on_stderr() if not stderr_is_terminal() else contextlib.nullcontext():
            timeout_s = PROBE_TIMEOUT_S if args.video_timeout is None else args.video_timeout
            return 1 if verify(targets, args.workers, args.full_decode, timeout_s, root_name, classes_name) else 0
    except (ConfigError, DataError, FileNotFoundError) as e:  # DataListError is a DataError
        print(f"error: {flags_as_typed(e, args)}", file=sys.stderr)  # --num_classes, if so typed
        return 2
    except OSError as e:  # an index cache or quarantine file the disk refuses (full, over quota): one line
        failure = write_failure(e, rerun="run the same command")
        if failure is None:
            raise
        print(f"error: {failure}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(finished(stdout_may_close(main)))  # a closed stdout stops no work; after its last line, nor a Ctrl-C
