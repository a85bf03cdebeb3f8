r"""Extract per-video features: the pooled pre-logit vector (the ``fc_norm`` output) of every test view, or of
every window of a sliding window along time (for temporal action localisation).

    python -m tools.extract_features videos/ --cfg configs/k400.yaml --weights ckpt.pth --out feats/
    python -m tools.extract_features videos.txt --weights model.safetensors --out feats/ --window 16 --stride 4
    torchrun --nproc_per_node 8 -m tools.extract_features videos.txt --weights ... --out feats/ --window 16

Views (default): TEST.NUM_CLIP x TEST.NUM_CROP views per video through the evaluation loader; one row per view,
ordered [crop][clip]. Windows (``--window W [--stride S]``): windows of W frames every S frames (S defaults to
W); the last window ends at the last frame, and a video shorter than W gets one window whose missing frames repeat
the last one. DATA.NUM_FRAMES frames are taken evenly over each window (all of them when W = NUM_FRAMES), centre
crop as in the 1-crop test; frames are decoded with PyAV on the host (each once, in order), resized and normalised
on the device. Videos are probed first, as the index probes them (DATA.INDEX_WORKERS, DATA.VIDEO_TIMEOUT_S), and
each step of a video's decode (its open, each batch of windows) has DATA.VIDEO_TIMEOUT_S too.
Features have no class names: DATA.LABEL_LIST is not read. A video whose display matrix turns it (a phone's portrait
video) is read as stored, as evaluation reads it, with one ``note:`` line naming the turn, as ``predict`` says it.

Output (see tools/feature_store.py): shards (``.npy`` or ``.safetensors``, float32 or ``--fp16``) and
``index.jsonl`` (path, shard, row, number of windows, window starts in frames and seconds). Every rank writes its
own shards; a rerun skips the videos already extracted (a video is the file its path resolves to: a linked folder
gives the same videos), except those whose size or mtime changed since (re-encoded): extracted again. Videos that
cannot be read are listed with each one's reason in ``failed-rank<rrr>.jsonl`` (the rank zero-padded: rank 0's is
``failed-rank000.jsonl``), rewritten by every run: only those still without features. ``settings.json`` records how
the features were made (with the weights file's size and a hash of its contents, TEST.SAMPLING, the views'
DATA.SAMPLING, DATA.FRAME_INTERVAL, DATA.DECODE_DEVICE, DATA.CPU_DECODER and DATA.OUTPUT_DTYPE, the precision, the
pooling); once the index lists a video, a run with other settings is refused. A Ctrl-C, a stop signal (SIGTERM,
SIGUSR1) or a crash first writes the videos finished so far, so the same command skips them. Weights without a head,
or with a head of another class count, are used (features stop before the head).

Exit status: 0 when the index holds at least one of the given videos (extracted now or before), 1 when it holds
none (nothing could be extracted), 2 for unusable input (arguments, config, weights, an --out that is not a
folder, an error writing the output) or NaN or infinite features (weights holding NaN; the error names the video,
whose features are not written) with a one-line error, 4 when stopped by SIGTERM or SIGUSR1 (the same command
goes on).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from typing import Any, Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: spinning OpenMP threads starve the loader

from evautil.interrupt import (STARTING, STOPPED_EXIT_STATUS, Stopped, finished, on_interrupt,  # noqa: E402
                               stop_signals_raise)

if __name__ == "__main__":  # a Ctrl-C or a stop signal during the imports below (seconds, for torch) is one line too
    on_interrupt(STARTING, stop_status=STOPPED_EXIT_STATUS)

# torch and the engine are imported in the functions that use them: the loader's worker processes import this
# module again (evautil/workers.py) and need neither.
from tools.feature_store import (FORMATS, FeatureStore, NonFiniteFeaturesError, check_settings,  # noqa: E402
                                 failed_ranks, file_identity, finished_paths, lock_output, lost_shards, merge_index,
                                 remove_unfinished_shards, resume_plan, rewrite_failed)
# the sliding windows (decode, forward) are feature_windows's; their names stay importable from here
from tools.feature_windows import (check_window, extract_windows, roi_resize, window_frames,  # noqa: E402
                                   window_settings_error, window_starts)

__all__ = ["window_starts", "window_frames", "window_settings_error", "roi_resize", "extract", "extract_into",
           "NonFiniteFeaturesError", "main"]


# ---------------------------------------------------------------------------------------------------- extraction
def _extract_views(cfg, model, paths: Sequence[str], store: FeatureStore, work_dir: str, ctx, amp_dtype, *,
                   progress: bool) -> dict[str, int]:
    """The test views' features of ``paths`` (this rank's share) handed to ``store``; returns the turns of the videos
    stored whose display matrix turns them (``{path: degrees}``, as the index recorded them)."""
    from tools.inference import views_through_model

    views = {"mode": "views", "num_clip": cfg.TEST.NUM_CLIP, "num_crop": cfg.TEST.NUM_CROP,
             "starts_frames": None, "starts_seconds": None}
    stored: set[int] = set()  # this rank's rows whose features were handed to the store

    def store_batch(rows: list[int], pooled, _) -> None:
        for row, feats in zip(rows, pooled.cpu().numpy()):
            store.add({"path": paths[row], **views}, feats)
            stored.add(row)

    # features that are NaN or infinite are refused before their batch is stored: written, a rerun would skip their
    # videos as done
    unreadable, turned = views_through_model(cfg, model, paths, work_dir, ctx, amp_dtype, checked="features",
                                             error=NonFiniteFeaturesError,
                                             bar=f"features (rank {ctx.rank})" if progress else None,
                                             progress=progress, each_batch=store_batch)
    for row, reason in unreadable.items():
        store.fail(paths[row], reason)
    return {paths[row]: turned[row] for row in sorted(turned) if row in stored}


def extract_into(cfg, model, paths: Sequence[str], store, ctx, *, window: int = 0, stride: int = 0,
                 per_batch: int = 8, work_dir: str, progress: bool = True) -> None:
    """The features of ``paths`` (this rank's share) handed to ``store``: ``store.add(meta, features)`` per video
    (``meta['path']`` its path, float32 rows: one per test view, [crop][clip], or per window), ``store.fail(path,
    reason)`` per video that cannot be read. Sliding windows when ``window`` > 0 (``stride`` 0: ``window``), else
    the test views; ``work_dir`` holds the views mode's video list and index cache. A video whose display matrix
    turns it (a phone's portrait video) is used as stored, with one ``note:`` line, as ``predict`` says it."""
    from engine.precision import resolve_precision
    from tools.inference import loader_warnings_unprinted, note_turned

    # unchecked, a stride without a window gave the test views, and a negative one failed every video
    check_window(window, stride)
    amp_dtype, _ = resolve_precision(cfg.TRAIN.PRECISION, ctx.device)
    # quiet (--quiet, Predictor.features): the loader's "bad video" warnings are left out too, as predict leaves them
    # out; the failed lists (the records) give each unreadable video's reason
    with loader_warnings_unprinted(quiet=not progress):
        if window > 0:
            turned = extract_windows(cfg, model, paths[ctx.rank::ctx.world_size], store, ctx, amp_dtype,
                                     window=window, stride=stride or window, per_batch=per_batch, progress=progress)
        else:
            turned = _extract_views(cfg, model, paths, store, work_dir, ctx, amp_dtype, progress=progress)
    note_turned(turned, "read for its features")  # each rank of the videos it extracted: each video once


def _views_input_decided(cfg, settings: dict[str, Any]):
    """Record in ``settings`` where the views' loader decodes, the CPU decoder it may use (DALI's or PyAV, as
    DATA.CPU_DECODER says) and the type of the clips it gives (GPU or CPU decoding, DALI or PyAV, and float16 or
    float32 inputs give slightly different features), as that loader decides them, and return
    ``cfg`` with the decode device decided: deciding 'auto' again would repeat its warning."""
    from dali_pipelines.loader_output import clip_dtype
    from dali_pipelines.routing import resolve_decode_device

    device = resolve_decode_device(cfg.DATA.DECODE_DEVICE)
    settings.update({"DATA.DECODE_DEVICE": device, "DATA.CPU_DECODER": cfg.DATA.CPU_DECODER,
                     "DATA.OUTPUT_DTYPE": clip_dtype(cfg.DATA.OUTPUT_DTYPE, device, cfg.TRAIN.PRECISION)})
    decided = cfg.clone()
    decided.defrost()
    decided.DATA.DECODE_DEVICE = device
    decided.freeze()
    return decided


def extract(cfg, model, paths: Sequence[str], out_dir: str, ctx, *, window: int = 0, stride: int = 0,
            per_batch: int = 8, fmt: str = "npy", fp16: bool = False, shard_videos: int = 64,
            work_dir: str = "", progress: bool = True, weights: str = "") -> dict[str, Any]:
    """Extract the features of ``paths`` not yet in ``out_dir``; views mode unless ``window`` > 0.

    ``weights`` (the checkpoint's name; its file's identity, :func:`tools.model_io.weights_identity`, with it) is
    recorded with the other settings that make the features (mode, window, frames, size, views, TEST.SAMPLING, the
    views' DATA.SAMPLING, DATA.DECODE_DEVICE, DATA.CPU_DECODER and DATA.OUTPUT_DTYPE as decided and, dense,
    DATA.FRAME_INTERVAL, the precision in force, the pooling, the tubelet, format); once ``out_dir`` holds features,
    a later run into it must use the same ones (ValueError naming the differences otherwise). A ``settings.json`` of
    an older version, without some of them, is taken to match: a ``note:`` line names them, and they are recorded
    from then on.

    An interruption (KeyboardInterrupt, a stop signal raised as :class:`evautil.interrupt.Stopped`) or a crash
    first writes the videos this rank finished, so that a rerun skips them, and is raised again.

    Returns ``{'done_before', 'written', 'listed', 'videos', 'index'}``: videos skipped as already extracted, videos
    written by this run (all ranks), videos of ``paths`` in the index now (each counted once, as it is extracted
    once: by its resolved path), the distinct videos of ``paths`` and the merged index file. Each rank's
    ``failed-rank<r>.jsonl`` is rewritten to list the videos still without features, with their reasons.
    """
    from engine import distributed
    from engine.precision import precision_name, resolve_precision
    from evautil.progress import counted
    from models.hub import cached_weights_path
    from tools.model_io import weights_identity

    check_window(window, stride)  # before settings.json is written
    stride = stride or window
    local = cached_weights_path(weights) if weights else None  # an hf:// reference: the file the load fetched
    settings = {"mode": "windows" if window > 0 else "views", "window": window, "stride": stride,
                "clip_frames": cfg.DATA.NUM_FRAMES, "input_size": cfg.DATA.INPUT_SIZE, "arch": cfg.MODEL.ARCH,
                "views": [cfg.TEST.NUM_CLIP, cfg.TEST.NUM_CROP] if window <= 0 else None, "format": fmt,
                "fp16": fp16, "weights": weights if "://" in weights or not weights else os.path.abspath(weights),
                "weights_file": weights_identity(local) if local and os.path.isfile(local) else None,
                "TEST.SAMPLING": cfg.TEST.SAMPLING if window <= 0 else None,  # windows: evenly spaced, always
                # which frames the views take: tsn segments, or dense runs FRAME_INTERVAL apart
                "DATA.SAMPLING": cfg.DATA.SAMPLING if window <= 0 else None,
                "DATA.FRAME_INTERVAL": cfg.DATA.FRAME_INTERVAL if window <= 0 and cfg.DATA.SAMPLING == "dense"
                else None,
                "TRAIN.PRECISION": precision_name(resolve_precision(cfg.TRAIN.PRECISION, ctx.device)[0]),
                "MODEL.USE_MEAN_POOLING": cfg.MODEL.USE_MEAN_POOLING, "DATA.TUBELET_SIZE": cfg.DATA.TUBELET_SIZE}
    if window <= 0:
        cfg = _views_input_decided(cfg, settings)
    else:  # windows: decoded by PyAV on the host and normalised in float32, whatever these say
        settings.update({"DATA.DECODE_DEVICE": None, "DATA.CPU_DECODER": None, "DATA.OUTPUT_DTYPE": None})
    with contextlib.closing(lock_output(out_dir, ctx.rank)):  # before settings.json is read: one run at a time
        remove_unfinished_shards(out_dir, ctx.rank)  # what a run of this rank killed mid-write left
        unrecorded = check_settings(out_dir, settings, write=ctx.is_main)
        if unrecorded and ctx.is_main:
            print(f"note: {os.path.join(out_dir, 'settings.json')} was written by an older version without "
                  f"{', '.join(unrecorded)}: its features are taken as made with this run's "
                  f"({'; '.join(f'{k} {settings[k]!r}' for k in unrecorded)}), recorded from now on", file=sys.stderr)
        lost = lost_shards(out_dir) if ctx.is_main else {}
        if lost:  # deleted, or not copied with the folder: their videos are redone rather than skipped
            print(f"note: the index in {out_dir} lists {counted(sum(lost.values()), 'video')} without features, "
                  f"{'its shard' if len(lost) == 1 else 'their shards'} gone ({', '.join(sorted(lost)[:3])}"
                  f"{', ...' if len(lost) > 3 else ''}): extracted again when given", file=sys.stderr)
        # rank 0's plan on every rank: the ranks' shares must be of one list, whatever changes on disk meanwhile
        paths, identities, todo = distributed.broadcast_object(
            _resume_plan(out_dir, paths) if ctx.is_main else None, ctx)
        store = FeatureStore(out_dir, ctx.rank, fmt=fmt, fp16=fp16, shard_videos=shard_videos,
                             identities={p: identities[p] for p in todo})
        try:
            if todo:
                extract_into(cfg, model, todo, store, ctx, window=window, stride=stride, per_batch=per_batch,
                             work_dir=work_dir or os.path.join(out_dir, ".work"), progress=progress)
        finally:  # also on a Ctrl-C, a stop signal or a crash: the finished videos are kept, and a rerun skips them
            store.flush()
        written = sum(distributed.all_gather_objects(store.written, ctx))
        distributed.barrier(ctx)  # every rank's shards and index lines are on disk
        stale = set(resume_plan(out_dir, paths, identities)[0])  # given, and without features of the file as it is
        done, retried = (finished_paths(out_dir) - stale) | (set(paths) - stale), set(todo)
        store.write_failed(retried, done)
        if ctx.is_main:  # files of ranks an earlier, larger run had: the same rule, with no new failures
            for rank in failed_ranks(out_dir):
                if rank >= ctx.world_size:
                    rewrite_failed(out_dir, rank, {}, retried, done)
        index = merge_index(out_dir, paths, identities) if ctx.is_main else os.path.join(out_dir, "index.jsonl")
        distributed.barrier(ctx)  # the failed files are final when any rank returns
    return {"done_before": len(paths) - len(todo), "written": written, "listed": len(paths) - len(stale),
            "videos": len(paths), "index": index}


def _resume_plan(out_dir: str, paths: Sequence[str]) -> tuple[list[str], dict[str, Any], list[str]]:
    """``(paths, identities, todo)``: ``paths`` each video once (by its resolved path: the same file given twice, or
    through a linked folder, was extracted twice, or stopped the views' loader with an error that blamed another
    process for its list), their files' sizes and mtimes (:func:`tools.feature_store.file_identity`) and those to
    extract: not in ``out_dir``, or changed since their features were made. Says in one ``note:`` line each how many
    changed videos are extracted again, and how many skipped ones an older version's index cannot tell changed."""
    from evautil.progress import counted
    from tools.inference import first_names

    paths = list(dict.fromkeys(first_names(paths).values()))  # each file under the first name given
    identities = {p: file_identity(p) for p in paths}
    todo, changed, unknown = resume_plan(out_dir, paths, identities)
    if changed:
        print(f"note: {counted(len(changed), 'video')} changed (another size or modification time) since "
              f"{'its' if len(changed) == 1 else 'their'} features in {out_dir} were extracted: extracted again, "
              "their old features left out of index.jsonl", file=sys.stderr)
    if unknown:
        print(f"note: the index in {out_dir} records no size or modification time for "
              f"{counted(len(unknown), 'video')} given (extracted by an older version): a video changed since "
              "cannot be detected there, and is not extracted again (another --out extracts every video anew)",
              file=sys.stderr)
    return paths, identities, todo


# ---------------------------------------------------------------------------------------------------- command
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from evautil.cli import ArgumentParser, home_path
    from tools.inference import opts_last

    p = ArgumentParser(prog="python -m tools.extract_features", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=home_path,
                   help="video files, folders (searched recursively), lists (.txt) or quoted patterns ('clips/*.mp4')")
    p.add_argument("--weights", required=True, type=home_path,
                   help="checkpoint, exported .safetensors or hf:// reference")
    p.add_argument("--cfg", default="", type=home_path, help="config YAML (optional with an exported .safetensors)")
    p.add_argument("--out", required=True, type=home_path,
                   help="output folder (shards, index, failed lists; rerun to resume)")
    p.add_argument("--root", default="", type=home_path,
                   help="folder that relative paths in lists and arguments are joined to")
    p.add_argument("--window", type=int, default=None,
                   help="sliding window of this many frames (default: test views)")
    p.add_argument("--stride", type=int, default=None, help="frames between window starts (default: --window)")
    p.add_argument("--windows-per-batch", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--format", choices=sorted(FORMATS), default="npy", help="shard format (default npy)")
    p.add_argument("--fp16", action="store_true", help="store float16 features (default float32)")
    p.add_argument("--shard-videos", type=int, default=64, help="videos per shard (default 64)")
    p.add_argument("--quiet", action="store_true", help="no progress (a bar on a terminal, else plain lines), no "
                                                      "warnings for unreadable videos (failed-rank*.jsonl lists them)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = p.parse_args(opts_last(p, p.respelled(argv)))
    problem = window_settings_error(args.window, args.stride, prefix="--")
    if problem:
        p.error(problem)
    args.window, args.stride = args.window or 0, args.stride or 0  # extract() takes 0 for not given
    for flag, value in (("--windows-per-batch", args.windows_per_batch), ("--shard-videos", args.shard_videos)):
        if value < 1:  # the one given, with its value, as --window and --stride are named
            p.error(f"{flag} must be at least 1, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    from engine import distributed
    from tools.inference import (InputError, check_output_path, collect_videos, error_exit, load_model, load_setup,
                                 stopped_exit, videos_of_rank_0)

    args = parse_args(argv)
    # extract() writes the finished videos on its way out, whatever stops it
    kept = (f"the videos finished so far are written to {args.out} (index-rank*.jsonl, with their shards), and the "
            "same command skips them")
    on_interrupt(f"extracting features: {kept}")
    from evautil.progress import counted
    from train import INPUT_ERRORS

    writing = False  # an OSError that names no file is a failed write only once the features are being written
    try:
        with stop_signals_raise():  # a scheduler's stop (SIGTERM, SIGUSR1) ends the work as a Ctrl-C does
            check_output_path(args.out, "--out", folder=True)  # before the model runs
            cfg, _ = load_setup(args.cfg, args.opts, args.weights, class_names=False,  # features need no names
                                command=shlex.join(["python", "-m", "tools.extract_features", *args.inputs, "--out",
                                                    args.out]))
            paths = collect_videos(args.inputs, args.root)
            ctx = distributed.init_from_env()
            paths = videos_of_rank_0(paths, ctx)
            # features stop before the head: a backbone without one, or a head of other classes, is fine
            model = load_model(cfg, args.weights, ctx.device, warn=ctx.is_main, features_only=True)
            writing = True
            result = extract(cfg, model, paths, args.out, ctx, window=args.window, stride=args.stride,
                             per_batch=args.windows_per_batch, fmt=args.format, fp16=args.fp16,
                             shard_videos=args.shard_videos, progress=not args.quiet, weights=args.weights)
    except Stopped as e:
        return stopped_exit(e, kept)
    except INPUT_ERRORS + (InputError, ValueError, OSError) as e:
        # a write that failed (a full disk) names no file; a read of the config or a list (an I/O error) is named by
        # the reads themselves (evautil.files.naming_the_file)
        return error_exit(e, args, writing=writing, out=args.out)
    listed, given = result["listed"], result["videos"]  # each video once, however many names it was given by
    distributed.shutdown()  # before the summary, which is the last thing the command does
    if ctx.is_main:
        print(f"{counted(result['written'], 'video')} extracted, {result['done_before']} already done; {listed} of "
              f"{given} in {result['index']}" + ("" if listed == given else
                                                  f"; {given - listed} unreadable, listed in "
                                                       f"{os.path.join(args.out, 'failed-rank*.jsonl')}"),
              file=sys.stderr)
    return 0 if listed else 1


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(finished(stdout_may_close(main)))  # a closed stdout stops no work; after its last line, nor a Ctrl-C
