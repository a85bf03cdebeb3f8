"""Multi-view evaluation: mean of per-view softmax (the original's rule), exact top-1/top-5 over the split.

Every rank evaluates a disjoint set of videos; the per-video results are gathered on every rank, so the accuracy
is computed over each video exactly once, and duplicates (a sharding bug) are detected rather than counted twice.
An evaluation that scored no video is an error, not an accuracy of 0. The label list's names are read by
``label_names.py``, the predictions and per-class files written by ``prediction_files.py`` (their names are
importable from here too).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from configs import ConfigError
from evautil.errors import some_names
from evautil.progress import counted

from .distributed import DistContext, all_gather_objects
# The label list's and the prediction files' names are imported from here too: re-exported
from .label_names import names_given_twice, read_label_names
from .loader_stats import loader_stats, unreadable_rows
from .metrics import MetricLogger
from .prediction_files import listed_more_than_once, per_class_accuracy, top5_is_informative, write_predictions
from .ranking import top_classes

__all__ = ["evaluate", "evaluate_and_log", "read_label_names", "names_given_twice", "write_predictions",
           "per_class_accuracy", "listed_more_than_once", "top5_is_informative", "EvaluationFailedElsewhere",
           "every_rank_learned", "EvaluationStopped", "only_the_rest"]


class EvaluationFailedElsewhere(RuntimeError):
    """Another rank's evaluation failed: this rank stops with it, told in the gather that ends every evaluation
    (instead of waiting there for a rank that is gone)."""


class EvaluationStopped(Exception):
    """A rank was asked to stop (``stop_requested``) before its share was scored: raised on every rank after the
    gather that ends the evaluation, with the predictions of all ranks (and the ``kept`` ones) scored so far.
    ``interrupted``: a Ctrl-C ended it (a single process's, ``keep_on_interrupt``), not a stop signal."""

    def __init__(self, split: str, predictions: list[tuple], views: int, classes: int, ranks: list[int],
                 interrupted: bool = False) -> None:
        self.predictions, self.views, self.classes, self.ranks = predictions, views, classes, ranks
        self.interrupted = interrupted
        super().__init__(f"the {split} evaluation stopped on {'a Ctrl-C' if interrupted else 'a stop signal'} "
                         f"(ranks {ranks}) after {len(predictions)} videos")


def every_rank_learned(error: BaseException) -> bool:
    """Whether ``error`` ended an evaluation on every rank at the same point (the failing rank's own error, or
    :class:`EvaluationFailedElsewhere` on the others): the ranks may then still meet in a collective (a save)."""
    return isinstance(error, EvaluationFailedElsewhere) or getattr(error, "_eva_every_rank_learned", False)


def _first_line(error: BaseException) -> str:
    lines = f"{type(error).__name__}: {error}".strip().splitlines()
    return lines[0] if lines else type(error).__name__


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[dict], ctx: DistContext, *, split: str = "val",
             autocast_dtype: torch.dtype | None = None, max_views_per_forward: int = 0,
             progress: Callable[[int], None] | None = None, stop_requested: Callable[[], bool] | None = None,
             kept: dict[str, Any] | None = None, keep_on_interrupt: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` on every video of ``loader`` across all ranks.

    Args:
        model: the plain module (not DDP-wrapped); put in eval mode here and restored afterwards.
        loader: yields ``{'video': (B, V, T, 3, S, S), 'label': (B,), 'index': (B,)}``; the views are scored
            as ``mean_v softmax(logits_v)``.
        ctx: distributed context (the results of all ranks are combined).
        autocast_dtype: bf16/fp16 autocast on CUDA; None for full precision.
        max_views_per_forward: clips per forward pass (0: a whole batch of B x V clips at once).
        progress: called after every batch with its number of videos (e.g. ``MetricLogger.eval_progress``).
        stop_requested: asked before every batch (this rank's own flag, no collective): True ends this rank's
            share there, its batches before it whole; the gather then tells every rank, which all raise
            :class:`EvaluationStopped`.
        kept: ``{'predictions', 'views', 'classes'}`` of an earlier stopped evaluation of the same videos: those
            videos are not forwarded again and their predictions count (:func:`evaluate_and_log` leaves them out of
            the loader, :func:`only_the_rest`; rows of them that a loader still yields are dropped before the
            model).
        keep_on_interrupt: in a single process, a Ctrl-C (KeyboardInterrupt) between or inside batches ends it as
            ``stop_requested`` does, with the batches scored before it (:class:`EvaluationStopped`, ``interrupted``).
            With several processes it propagates at once: it may land in a collective the others wait in.

    Returns:
        ``{'split', 'top1', 'top5' (None when the model scores 5 classes or fewer: :func:`top5_is_informative`),
        'mean_class_top1' (percent), 'num_videos', 'views', 'time_s' (the slowest
        rank's), 'videos_per_sec' (every rank's videos over it), 'startup_s' (seconds of ``time_s`` before that
        rank's first batch), 'kept' (videos taken from ``kept``; ``videos_per_sec`` counts the others),
        'predictions': [(index, label, [top-5 classes], [top-5 probabilities]), ...] sorted by index,
        'duplicates': number of videos seen more than once}``.
    """
    was_training = model.training
    model.eval()
    start = time.perf_counter()  # a duration: the wall clock set back (NTP, a VM resumed) made time_s negative
    failure, local, views, classes, first_batch_s, stopped = None, [], 0, 0, None, False
    kept_preds = {p[0]: tuple(p) for p in (kept or {}).get("predictions", ())}
    try:
        local, views, classes, first_batch_s, stopped = _score_batches(
            model, loader, ctx.device, autocast_dtype, max_views_per_forward, progress, start,
            stop_requested, kept_preds, keep_on_interrupt and not ctx.distributed)
    except Exception as e:
        if not ctx.distributed:
            raise
        failure = e  # said in the gather below, where the other ranks would otherwise wait for this one
    finally:
        if was_training:
            model.train()
    elapsed = time.perf_counter() - start
    startup = first_batch_s if first_batch_s is not None else elapsed
    gathered = all_gather_objects({"preds": local, "views": views, "classes": classes, "time_s": elapsed,
                                   "startup_s": startup, "failed": _first_line(failure) if failure else None,
                                   "stopped": stopped}, ctx)
    _raise_any_failure(failure, [part["failed"] for part in gathered], split)
    # The evaluation lasts until its slowest rank is done (the others wait for it in the gather): its time, not
    # rank 0's own, is what every video took (rank 0's alone overstated the rate when another rank was slower).
    slowest = max(gathered, key=lambda part: part["time_s"])
    elapsed, startup = slowest["time_s"], slowest["startup_s"]
    preds, duplicates, views, classes = _merged(gathered, kept_preds, kept or {})
    stopped_ranks = [rank for rank, part in enumerate(gathered) if part["stopped"]]
    if stopped_ranks:  # every rank learns it here: all raise, none waits in a collective for the others
        raise EvaluationStopped(split, preds, views, classes, stopped_ranks, interrupted=stopped == "interrupted")
    n = len(preds)
    return {
        "split": split,
        **_accuracies(preds, classes),
        "num_videos": n,
        "views": views,
        "time_s": elapsed,
        # Every video over the whole evaluation, the loader's start included (a fresh loader builds its graphs and
        # starts its decode workers on the first batch); ``startup_s`` says how much of ``time_s`` that was.
        "videos_per_sec": (n - len(kept_preds)) / elapsed if elapsed > 0 else 0.0,
        "kept": len(kept_preds),
        "startup_s": startup,
        "duplicates": duplicates,
        "predictions": preds,
    }


def _merged(gathered: list[dict[str, Any]], kept_preds: dict[int, tuple], kept: dict[str, Any]
            ) -> tuple[list[tuple], int, int, int]:
    """Every rank's part of :func:`evaluate` (``gathered``) with the ``kept`` videos' (their predictions by index
    ``kept_preds``): ``(predictions, one per video sorted by index (a video's last one), how many were of a video
    seen before (a sharding bug: counted once), views, classes (0: none scored))``."""
    seen = dict(kept_preds)
    duplicates = 0
    for part in gathered:
        for pred in part["preds"]:
            if pred[0] in seen:
                duplicates += 1
            seen[pred[0]] = pred
    views = max([part["views"] for part in gathered] + [kept.get("views", 0)])
    classes = max([part["classes"] for part in gathered] + [kept.get("classes", 0)])
    return [seen[i] for i in sorted(seen)], duplicates, views, classes


def _accuracies(preds: list[tuple], classes: int) -> dict[str, float | None]:
    """``top1``, ``top5`` (None when ``classes``, the model's class count, makes it say nothing:
    :func:`top5_is_informative`) and ``mean_class_top1`` of ``preds``, in percent (0 without a prediction)."""
    n = len(preds)
    top1 = sum(p[2][0] == p[1] for p in preds)
    top5 = sum(p[1] in p[2][:5] for p in preds)
    per_class = per_class_accuracy(preds, max(classes, 1 + max((p[1] for p in preds), default=-1)))
    return {
        "top1": 100.0 * top1 / n if n else 0.0,
        "top5": None if 0 < classes and not top5_is_informative(classes) else (100.0 * top5 / n if n else 0.0),
        # Each class weighs the same, however many videos it has (Kinetics classes range from ~50 to ~1000).
        "mean_class_top1": sum(c["top1"] for c in per_class) / len(per_class) if per_class else 0.0,
    }


def _score_batches(model: nn.Module, loader: Iterable[dict], device: torch.device,
                   autocast_dtype: torch.dtype | None, max_views_per_forward: int,
                   progress: Callable[[int], None] | None, start: float, stop_requested: Callable[[], bool] | None,
                   kept: dict[int, tuple], keep_on_interrupt: bool = False
                   ) -> tuple[list[tuple], int, int, float | None, bool | str]:
    """This rank's share of :func:`evaluate`: ``(predictions, views, classes, seconds before the first batch,
    stopped before its end: True, or "interrupted" by a Ctrl-C with ``keep_on_interrupt``)``; the rows of ``kept``
    videos are dropped from each batch before the model."""
    # Each batch's top-k (probabilities, classes; on the device), labels and indices, appended in one step: a Ctrl-C
    # between two steps of a batch leaves only whole batches here.
    scored: list[tuple[tuple[torch.Tensor, torch.Tensor], list[int], list[int]]] = []
    views = classes = 0
    first_batch_s = None  # until the first batch arrived: the loader's start (graph build, decode workers)
    amp = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    stopped: bool | str = False
    try:
        for batch in loader:
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - start
            # Asked before a batch, not after it: a stop during the last batch leaves an evaluation that is complete
            if stop_requested is not None and stop_requested():
                stopped = True
                break
            videos = len(batch["index"].view(-1))  # the progress counts the kept ones too: they are done
            if kept:  # a loader that cannot leave them out (only_the_rest) yields them: not forwarded again
                rows = [i for i, r in enumerate(batch["index"].view(-1).tolist()) if int(r) not in kept]
                batch = {k: batch[k][rows] if k in ("video", "label", "index") else batch[k] for k in batch}
            if len(batch["index"].view(-1)):
                video = batch["video"].to(device, non_blocking=True)
                if autocast_dtype is None:
                    video = video.float()
                b, v = video.shape[:2]
                views = v
                clips = video.flatten(0, 1)  # (B*V, T, 3, S, S), view-major within each video
                chunk = max_views_per_forward or clips.shape[0]
                with amp:
                    logits = torch.cat([model(clips[i:i + chunk]) for i in range(0, clips.shape[0], chunk)])
                probs = logits.float().softmax(-1).view(b, v, -1).mean(1)  # mean of per-view softmax
                classes = probs.shape[-1]
                _check_labels(batch["label"].view(-1).tolist(), batch["index"].view(-1).tolist(), classes)
                k = min(5, classes)
                # Kept on the device and copied once after the loop: a copy per batch would make the host wait for
                # every batch's forward before it asks the loader for the next.
                scored.append((top_classes(probs, k), batch["label"].view(-1).tolist(),
                               batch["index"].view(-1).tolist()))
            if progress is not None:
                progress(videos)
    except KeyboardInterrupt:
        if not keep_on_interrupt:
            raise
        stopped = "interrupted"  # the batches in ``scored`` are whole; the one in flight is dropped
    top_p = torch.cat([t[0] for t, _, _ in scored]).cpu().tolist() if scored else []
    top_i = torch.cat([t[1] for t, _, _ in scored]).cpu().tolist() if scored else []
    labels = [y for _, ys, _ in scored for y in ys]
    indices = [r for _, _, rs in scored for r in rs]
    preds = [(int(r), int(y), c, p) for r, y, c, p in zip(indices, labels, top_i, top_p)]
    # Read on the host after the loop (no wait for each batch's forward): a NaN logit makes every probability of the
    # video NaN, whose top-5 is then an arbitrary ranking that matched the label by chance.
    not_finite = [p[0] for p in preds if not all(math.isfinite(x) for x in p[3])]
    if not_finite:
        raise ValueError(f"the model's scores for {counted(len(not_finite), 'video')} (list rows "
                         f"{some_names([str(r) for r in not_finite])}) are NaN or infinite, which no accuracy can "
                         "rank: check the weights for NaN or inf values (a training run that diverged), or evaluate "
                         "in a wider precision (TRAIN.PRECISION fp16 overflows where bf16 and fp32 do not)")
    return preds, views, classes, first_batch_s, stopped


def _check_labels(labels: list[int], rows: list[int], classes: int) -> None:
    """Refuse labels that are no class of the model's ``classes`` (its output's width): a label at or past it was
    counted wrong in silence, and a negative one in the per-class table as the last class."""
    outside = [(r, y) for r, y in zip(rows, labels) if not 0 <= int(y) < classes]
    if outside:
        raise ValueError(f"labels outside the model's {classes} classes (0 to {classes - 1}): "
                         + some_names([f"list row {r} has label {y}" for r, y in outside])
                         + "; check the list's labels against DATA.NUM_CLASSES and the head of the weights")


def _raise_any_failure(failure: Exception | None, said: list[str | None], split: str) -> None:
    """After the gather: the failing rank raises its own error, marked as known to every rank
    (:func:`every_rank_learned`), and the others :class:`EvaluationFailedElsewhere` naming the first failed rank."""
    if failure is not None:
        failure._eva_every_rank_learned = True  # type: ignore[attr-defined]
        raise failure
    failed = [(rank, text) for rank, text in enumerate(said) if text]
    if failed:
        rank, text = failed[0]
        raise EvaluationFailedElsewhere(f"rank {rank}'s {split} evaluation failed ({text}), so this process stops "
                                        f"with it: that rank's line and its log_rank{rank}.txt say more")


@contextlib.contextmanager
def only_the_rest(loader: Any, kept: dict[str, Any] | None) -> Iterator[None]:
    """Inside, ``loader`` yields only the videos that ``kept`` (:func:`evaluate`'s) holds no prediction of: a loader
    with ``leave_out_scored`` (``VideoLoader``) neither reads nor decodes the kept ones, and deals the others to the
    ranks by list row as an evaluation that was never stopped does; every row is back in it afterwards. A rerun
    stopped at 90 % of a multi-view test decodes its last 10 %, not the whole list again."""
    rows = [p[0] for p in (kept or {}).get("predictions", ())]
    leave_out = getattr(loader, "leave_out_scored", None)
    if not rows or leave_out is None:
        yield
        return
    leave_out(rows)
    try:
        yield
    finally:
        leave_out(())


def evaluate_and_log(model: nn.Module, loader: Any, ctx: DistContext, metrics: MetricLogger, *, split: str,
                     num_classes: int, class_names: dict[int, str] | None = None,
                     autocast_dtype: torch.dtype | None = None, epoch: int | None = None,
                     step: int | None = None, checkpoint: str | None = None,
                     after_batch: Callable[[], None] | None = None, stop_requested: Callable[[], bool] | None = None,
                     kept: dict[str, Any] | None = None, keep_on_interrupt: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` on ``loader`` and record it: warn when videos were left out, write the predictions (a row
    for each listed video, the unreadable ones with their reason) and per-class accuracy (rank 0), log the eval line
    with the loader's views (``num_clip`` x ``num_crop``), ``checkpoint`` (the weights file scored, when the weights
    were loaded from one) and the loader's counters over all ranks, read after this evaluation (``loader_stats``:
    counted since the loader was built). Every rank must call it. Needs no optimizer or trainer. Shows progress (a
    bar on a terminal, plain lines otherwise); ``after_batch`` is called after each batch too (the trainer says
    there a stop signal that came); ``stop_requested``, ``kept`` and ``keep_on_interrupt`` are :func:`evaluate`'s (a
    stop raises :class:`EvaluationStopped` before anything is written; the ``kept`` videos are left out of ``loader``,
    :func:`only_the_rest`). Returns the result without its predictions."""
    with only_the_rest(loader, kept):
        progress = metrics.eval_progress(split, len(loader) if hasattr(loader, "__len__") else None)

        def batch_done(videos: int) -> None:
            progress(videos)
            if after_batch is not None:
                after_batch()
        try:
            result = evaluate(model, loader, ctx, split=split, autocast_dtype=autocast_dtype, progress=batch_done,
                              stop_requested=stop_requested, kept=kept, keep_on_interrupt=keep_on_interrupt)
        finally:
            progress.close()
    preds = result.pop("predictions")
    if result["duplicates"]:
        metrics.warn(f"{result['duplicates']} videos were evaluated more than once (counted once)")
    # The loader knows the views' layout (its TEST.NUM_CLIP x NUM_CROP, or the final test's); null when it does not.
    result.update({"num_clip": getattr(loader, "num_clip", None), "num_crop": getattr(loader, "num_crop", None),
                   "checkpoint": os.path.abspath(checkpoint) if checkpoint and os.path.isfile(checkpoint)
                   else checkpoint or None})
    stats = loader_stats(loader, ctx)  # after the evaluation, so that its own quarantines and samples are counted
    skipped = stats.pop("skipped", [])
    listed = stats.get("listed_videos")
    result.update(stats)
    unreadable = unreadable_rows(loader, ctx)
    if listed is not None and result["num_videos"] < listed:
        metrics.warn(
            f"{split}: evaluated {result['num_videos']} of {listed} listed videos "
            f"({stats.get('bad_at_index', 0)} bad when the list was indexed, "
            + (f"{stats['quarantined_earlier']} quarantined earlier in this run, "
               if stats.get("quarantined_earlier") else "")
            + f"{stats.get('skipped_videos', 0)} failed while decoding); the accuracy covers the evaluated ones only, "
            f"and predictions_{split}.csv gives each left-out one a row with its reason"
            + (": " + "; ".join(skipped[:5]) if skipped else ""))
    entries = {e.row: e for e in getattr(getattr(loader, "index", None), "entries", None) or []}
    repeated = listed_more_than_once(preds, entries)
    if repeated:  # the list's doing, not a sharding bug: each line is a video of the split as far as it says
        def lines(group: list[Any]) -> str:
            return ", ".join(str(e.line_no) for e in group[:4]) + (", ..." if len(group) > 4 else "")

        metrics.warn(
            f"{split}: {counted(len(repeated), 'video')} listed on more than one line "
            f"({counted(sum(len(g) - 1 for g in repeated), 'repeated line')}), each line scored and counted in the "
            "accuracy: " + "; ".join(f"{g[0].rel_path} (lines {lines(g)})" for g in repeated[:3])
            + ("; ..." if len(repeated) > 3 else "") + "; remove the repeated lines to count every video once")
    unwritten = None
    if ctx.is_main:
        scored = {p[0] for p in preds}
        left_out = [(r, entries[r].label if r in entries else None, unreadable.get(r, "not scored (no reason known)"))
                    for r in sorted(set(entries) | set(unreadable)) if r not in scored]
        try:
            write_predictions(metrics.output_dir, split, preds, {r: e.rel_path for r, e in entries.items()},
                              num_classes, class_names, unreadable=left_out)
        except OSError as error:  # a full disk: raised after the eval line, which was lost with hours of test
            if not result["num_videos"]:
                raise
            unwritten = error
    if not result["num_videos"] and listed:
        # An accuracy over no video is no number: it read "top-1 0.00%" (and "0 views/video"), a final_top1 of 0.
        schedule = getattr(loader, "schedule", None)
        desc = getattr(schedule, "list_desc", None) or f"the {split} list"
        raise ConfigError(
            f"{desc}: none of its {counted(listed, 'listed video')} could be scored ("
            + ", ".join(f"{stats.get(k, 0)} {what}" for k, what in (
                ("bad_at_index", "bad when the list was indexed"),
                ("quarantined_earlier", "quarantined earlier in this run"),
                ("skipped_videos", "failed while decoding")))
            + (f"; e.g. {skipped[0]}" if skipped else "")
            + f"); predictions_{split}.csv gives each its reason: check the videos, DATA.ROOT and the decode route")
    metrics.log_eval(result, epoch=epoch, step=step)
    if unwritten is not None:
        raise unwritten
    return result
