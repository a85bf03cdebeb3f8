"""Runs a training or an evaluation from ready objects: the engine's half of the wiring.

The engine imports neither DALI nor the model package. ``wiring.py`` (beside ``train.py``) builds the concrete
objects in one visible order: ``run_start.open_run`` (seeds, OUTPUT's run lock, logger), the loaders, the model,
then the weights chosen by ``start_weights.weights_to_load``; it hands them to :class:`Run`, and :func:`train` or
:func:`only_test` runs them. Evaluation needs no trainer (``evaluate.evaluate_and_log``).
:func:`check_lists_overlap` warns of validation videos that training uses and passes training's quarantines on to
the validation index. What is checked before any of this (the input files, the dry run's plan) is ``preflight``'s.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import distributed as dist_utils
from configs import ConfigError
from evautil.flops import model_size_text
from evautil.interrupt import on_interrupt
from evautil.progress import counted

from .checkpointing import Checkpointer
from .distributed import DistContext, all_gather_objects
from .evaluate import EvaluationStopped, evaluate_and_log, read_label_names
from .loader_stats import loader_stats
from .losses import VideoMixup, build_criterion
from .metrics import MetricLogger
from .optim import build_optimizer, build_scheduler
from .run_files import EARLIER_RUNS_DIR, recorded_path, release_output
from .plots import plot_finished_run
from .progress import check_countable_run
from .preemption import (PREEMPTED_EXIT_CODE, StepControl, StopNotice, StoppedOutsideTraining, run_complete,
                         stop_received)
from .test_progress import EVALUATION_PROGRESS_FILE, STOP_DURING_TEST, FinalTestProgress, interrupted_test
from .precision import chosen_precision, resolve_precision
from .resume_point import locate_checkpoint, restore_data_plan
from .train_epoch import TrainOptions
from .train_loop import Trainer

__all__ = ["Run", "announce_model", "check_lists_overlap", "train", "only_test", "progress_setting"]


@dataclass
class Run:
    """The ready objects of a run; ``close`` releases every loader and the logger.

    ``make_test_loader(num_clip, num_crop)`` builds a multi-view test loader over the validation list (the final
    test of a training run); the loaders it made are kept in ``test_loaders`` to be closed.
    ``weights``: what the model's weights are, for the log and the summary; ``weights_file``: the file they were
    loaded from (None: the initial weights), for the eval line.
    """

    ctx: DistContext
    metrics: MetricLogger
    model: torch.nn.Module
    val_loader: Any
    train_loader: Any = None
    make_test_loader: Callable[[int, int], Any] | None = None
    weights: str = "initial weights"
    weights_file: str | None = None
    test_loaders: list = field(default_factory=list)

    def close(self) -> None:
        for loader in (self.train_loader, self.val_loader, *self.test_loaders):
            if loader is not None and hasattr(loader, "close"):
                loader.close()
        self.metrics.close()
        release_output(self.metrics.output_dir)


def announce_model(cfg, model: torch.nn.Module, metrics: MetricLogger, ctx: DistContext, forward_flops: float,
                   decode_device: str) -> None:
    """Freeze what the config freezes, record the model's FLOPs for the MFU, and log what runs where."""
    if cfg.MODEL.STOP_GRAD_CONV1 and hasattr(model, "patch_embed"):
        # The model detaches the patch embedding's output, so its parameters never get a gradient; DDP (with
        # find_unused_parameters=False) would fail on them, and the optimizer need not hold them.
        model.patch_embed.requires_grad_(False)
    metrics.flops_per_clip = forward_flops
    n_params = sum(p.numel() for p in model.parameters())
    metrics.info(f"model {cfg.MODEL.ARCH}: {model_size_text(n_params, forward_flops)}; device {ctx.device}, "
                 f"{ctx.world_size} process(es); data decoded on {decode_device}")


def _data_counts(loader: Any, ctx: DistContext, prefix: str) -> dict[str, Any]:
    """A loader's data-failure counters (over all ranks) for the end-of-run summary, without the path list."""
    return {k: v for k, v in loader_stats(loader, ctx, prefix).items() if not k.endswith("skipped")}


def _class_names(cfg) -> dict[int, str] | None:
    return read_label_names(cfg.DATA.LABEL_LIST, cfg.DATA.NUM_CLASSES) if cfg.DATA.LABEL_LIST else None


def only_test(run: Run, cfg) -> dict[str, Any]:
    """Evaluate the model as loaded (see ``start_weights.weights_to_load``) on the test loader and write the
    summary. A stop signal ends the evaluation after the batch in flight, keeping the videos scored so far
    (``test_progress.FinalTestProgress``): the same command scores only the others. In a single process a Ctrl-C
    during its batches keeps them too, and the run then ends as interrupted."""
    if run.weights == "initial weights":  # check_files refuses this case; kept for callers that skip it
        run.metrics.warn("no checkpoint given or found: evaluating the initial weights")
    else:
        run.metrics.info(f"evaluating {run.weights}")
    amp_dtype, _ = resolve_precision(cfg.TRAIN.PRECISION, run.ctx.device)
    # The training's lines for a stop (checkpoints kept, SIGTERM saving the next step) do not fit an evaluation:
    # these say what a stop keeps of it and how to get its results.
    what = f"the evaluation of {run.weights}"
    on_interrupt(interrupted_test(what, EVALUATION_PROGRESS_FILE, ", before its summary.json",
                                  "; OUTPUT's checkpoints are as they were")
                 + "; the same command evaluates it again, but for the videos an earlier stop kept")
    try:
        # the videos a stopped evaluation of the same weights, views and list kept (the rerun forwards the others)
        progress = FinalTestProgress(run.metrics, run.ctx, run.weights_file, None,
                                     progress_setting(cfg, (cfg.TEST.NUM_CLIP, cfg.TEST.NUM_CROP)), run.val_loader,
                                     evaluation=what)
        with StepControl(run.ctx) as control:  # a stop signal sets a flag, asked before every batch
            notice = StopNotice(run.metrics.info)  # says it once, after the batch it came in
            with notice.evaluating(control, what, STOP_DURING_TEST):  # and leaving, one in the last batch
                try:
                    result = evaluate_and_log(run.model, run.val_loader, run.ctx, run.metrics, split="test",
                                              num_classes=cfg.DATA.NUM_CLASSES, class_names=_class_names(cfg),
                                              autocast_dtype=amp_dtype, checkpoint=run.weights_file,
                                              stop_requested=control.stop_requested, after_batch=notice,
                                              kept=progress.kept(), keep_on_interrupt=True)
                except EvaluationStopped as stop:
                    notice()  # one that came before the batch after which it stopped
                    if stop.interrupted:  # a single process's Ctrl-C: kept as a stop's, then it ends as a Ctrl-C does
                        on_interrupt(f"{what} {progress.interrupted(stop)}; its summary.json is not written yet: the "
                                     "same command scores the rest and writes its results")
                        raise KeyboardInterrupt from None
                    raise progress.stopped(stop, control.signal_name, True) from None
            progress.done()
            # Agreed as the trainer's final test does: only another rank may have been signalled in the last batch
            if control.poll()[0]:  # the results are seconds away, nothing is left
                said = stop_received(control.signal_name, "stop signal ")
                run.metrics.info(f"{said} after the last batch of {what}: writing its results (nothing to resume)")
            # Only now: stopped before, the evaluation leaves OUTPUT's config.yaml that of the checkpoints and log
            # beside it (run_files.move_earlier_results set a copy aside with the results this one replaces).
            run.metrics.write_config(cfg.dump())
            evaluated = run.weights  # the file's path, or "MODEL.PRETRAINED = <path>": that path, absolute
            if run.weights_file and evaluated.endswith(run.weights_file):
                evaluated = evaluated[:-len(run.weights_file)] + recorded_path(run.weights_file)
            _finish(run.metrics, run.ctx, cfg, {"mode": "evaluate only", "dataset": cfg.DATA.DATASET,
                                                 "evaluated": evaluated,
                                                 **_data_counts(run.val_loader, run.ctx, "test_")},
                    written=lambda: _results_written(what, cfg.OUTPUT))
    except StoppedOutsideTraining as stop:  # before the evaluation's own handling of the signals began
        raise StoppedOutsideTraining(stop.signal_name, (
            f"{stop.signal_name} received during {what}: stopped before its first batch; exit code "
            f"{PREEMPTED_EXIT_CODE}. Run the same command again to evaluate it")) from None
    return result


def progress_setting(cfg, views: tuple[int, int]) -> dict[str, Any]:
    """What, besides the weights and the loader, identifies a test whose predictions a stopped one keeps
    (``test_progress.FinalTestProgress``): the list, the views asked for, the frames, the sampling, the precision."""
    return {"list": os.path.realpath(cfg.DATA.VAL_FILE), "test_views": list(views),
            "num_frames": cfg.DATA.NUM_FRAMES, "frame_interval": cfg.DATA.FRAME_INTERVAL,
            "input_size": cfg.DATA.INPUT_SIZE, "sampling": cfg.TEST.SAMPLING, "precision": cfg.TRAIN.PRECISION}


def _finish(metrics: MetricLogger, ctx: DistContext, cfg, fields: dict[str, Any],
            written: Callable[[], None] = run_complete) -> None:
    """summary.json, after which the run is complete (``written``: a stop signal no longer stops it), then the
    summary's table and the plots (rank 0)."""
    metrics.summary(fields, written=written)
    if ctx.is_main:
        plot_finished_run(cfg.OUTPUT, metrics.info, metrics.warn)


def _results_written(what: str, out: str) -> None:
    """An evaluation's summary.json is written: the run is complete, and a Ctrl-C during its plots says so."""
    run_complete()
    on_interrupt(f"{what} wrote its results (summary.json, predictions_test.csv); its plots may be missing: "
                 f"python tools/plot_run.py {out} draws them")


def _past_the_epochs(located, epochs: int, step: int) -> str:
    """Where the checkpoint is, when TRAIN.EPOCHS (shortened with TRAIN.ALLOW_CONFIG_CHANGE) ends before it: the run
    is finished, but "epoch 1/1" named an epoch the checkpoint is past. "" otherwise."""
    ckpt = located.ckpt or {}
    epoch = ckpt.get("epoch", -1) + 1  # numbered from 1, as every line the run prints
    if epoch <= epochs:
        return ""
    at = f"the end of epoch {epoch}" if ckpt.get("epoch_complete") else f"mid-epoch {epoch}"
    return (f"(its checkpoint {located.path} is at {at}, step {step}, and TRAIN.EPOCHS {epochs} now ends before "
            "it)")


def _results_are_current(out: str, checkpoint: str | None, ctx: DistContext) -> bool:
    """Whether OUTPUT's summary.json is whole and was written after ``checkpoint`` (rank 0 looks; every rank gets
    its answer)."""
    summary = os.path.join(out, "summary.json")
    current = bool(checkpoint and os.path.isfile(summary) and os.path.isfile(checkpoint)
                   and os.path.getmtime(summary) >= os.path.getmtime(checkpoint) and _is_json_object(summary))
    return bool(all_gather_objects(current, ctx)[0])


def _evaluation_summary_note(out: str) -> str:
    """When OUTPUT's summary.json is an evaluate-only run's (no optimizer step), where the training's went: an
    evaluation moves the summary it would overwrite into earlier_runs/ (run_files.move_earlier_results)."""
    if _optimizer_steps(os.path.join(out, "summary.json")) != 0:
        return ""
    earlier = sorted(glob.glob(os.path.join(glob.escape(out), EARLIER_RUNS_DIR, "*", "summary.json")),
                     key=os.path.getmtime)
    trained = [p for p in earlier if _optimizer_steps(p)]
    where = f"; the training's is {trained[-1]}" if trained else ""
    return f". Its summary.json is that of a later evaluation (--only_test){where}"


def _optimizer_steps(summary: str) -> int | None:
    """A summary.json's ``optimizer_steps`` (0 for an evaluate-only run's); None when it cannot be read."""
    try:
        with open(summary, encoding="utf-8") as f:
            return int(json.load(f)["optimizer_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_json_object(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return isinstance(json.load(f), dict)
    except (OSError, ValueError):  # e.g. cut short by a full disk before summaries were written atomically
        return False


def check_ranks_plan_alike(ctx: DistContext, list_path: str, steps_per_epoch: int, fingerprint: str) -> None:
    """Every rank must plan the same epochs: DDP's gradient all-reduce pairs the ranks' steps, so a rank with fewer
    steps would leave the others waiting in it until NCCL's timeout ends the run, and equal counts from other usable
    videos would silently train some clips twice and others never. Each node's first rank builds its index, and a
    video that gave no answer in time is left out of that build only, so two nodes can differ. Compared once,
    before DDP (where the ranks also meet after each loaded its weights).

    Raises:
        ConfigError: the ranks differ, naming each one's steps and usable-video digest.
    """
    plans = all_gather_objects((steps_per_epoch, fingerprint), ctx)
    if len(set(plans)) > 1:
        seen = "; ".join(f"rank {r}: {steps} steps per epoch, usable videos {digest}"
                         for r, (steps, digest) in enumerate(plans))
        raise ConfigError(f"{list_path}: the ranks disagree on the training plan ({seen}): their indexes of the list "
                          "differ (a video one node could read and another could not, or a probe that timed out on "
                          "one node); run tools/verify_data.py on the list, then start the run again")


def models_for_training(model: torch.nn.Module, ctx: DistContext, t) -> tuple[torch.nn.Module, Any]:
    """The model the loop calls (DDP-wrapped on several processes, compiled with TRAIN.COMPILE) and the EMA copy
    (TRAIN.EMA; None without). DDP is built first: it gives every rank rank 0's weights, and the EMA copy must
    start from those (copied before, each rank's EMA kept its own randomly initialised weights, e.g. a new head)."""
    loop_model = dist_utils.wrap_ddp(model, ctx)
    ema = None
    if t.EMA:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=t.EMA_DECAY)
    if t.COMPILE:
        loop_model = torch.compile(loop_model)
    return loop_model, ema


def check_lists_overlap(run: Run, cfg) -> None:
    """Warn when the training and validation lists name the same files (the same list, or overlapping ones): the
    validation accuracy of those is measured on videos the model trains on. Not an error (a quick check on a tiny
    set does it on purpose). Either way, from now on a video training quarantines is left out of the evaluations too,
    instead of being decoded again there (and failing again, or waiting out ``DATA.VIDEO_TIMEOUT_S`` again)."""
    train_index, val_index = getattr(run.train_loader, "index", None), getattr(run.val_loader, "index", None)
    if not hasattr(train_index, "shared_with") or not hasattr(val_index, "videos"):
        return
    shared = train_index.shared_with(val_index)
    train_index.pass_quarantines_to(val_index, shared)
    if not shared:
        return
    files = {theirs[0]: ours for ours, theirs in sorted(shared.items(), reverse=True)}  # each file's first lines
    lines = train_index.videos.line_nos, val_index.videos.line_nos
    named = "; ".join(f"{val_index.videos.rel_path(v)} (training line {lines[0][t]}, validation line {lines[1][v]})"
                      for v, t in sorted(files.items())[:3])
    lists = (f"DATA.TRAIN_FILE and DATA.VAL_FILE are both {cfg.DATA.VAL_FILE}" if os.path.realpath(
        cfg.DATA.TRAIN_FILE) == os.path.realpath(cfg.DATA.VAL_FILE) else
        f"DATA.TRAIN_FILE {cfg.DATA.TRAIN_FILE} and DATA.VAL_FILE {cfg.DATA.VAL_FILE}")
    verb = "is" if len(files) == 1 else "are"
    run.metrics.warn(f"{lists}: {counted(len(files), 'file')} of the validation list {verb} in the training list "
                     f"too, so the validation accuracy is measured partly on videos the model trains on; e.g. {named}"
                     + ("; ..." if len(files) > 3 else "") + ": remove them from one of the lists, unless meant")


def check_classes_trained(run: Run, cfg) -> None:
    """Warn when no usable video of the training list has some of the classes 0..DATA.NUM_CLASSES-1 (a class folder
    that failed to download, a label list of another dataset): the head learns never to predict them, and the
    per-class results, which cover classes with scored videos, would not show it."""
    index = getattr(run.train_loader, "index", None)
    if not hasattr(index, "good_rows") or not hasattr(index, "videos"):
        return
    trained = {int(y) for y in index.videos.labels[index.good_rows]} if index.good_rows else set()
    missing = [c for c in range(cfg.DATA.NUM_CLASSES) if c not in trained]
    if not missing:
        return
    names = _class_names(cfg) or {}
    shown = ", ".join(f"{c} {names[c]!r}" if c in names else str(c) for c in missing[:5])
    run.metrics.warn(f"DATA.TRAIN_FILE {cfg.DATA.TRAIN_FILE} has no usable video of {len(missing)} of the "
                     f"{cfg.DATA.NUM_CLASSES} classes (DATA.NUM_CLASSES): {shown}" + (", ..." if len(missing) > 5
                                                                                      else "")
                     + "; the model never learns them: check the list, or DATA.LABEL_LIST and DATA.NUM_CLASSES")


def train(run: Run, cfg, resume: str = "", named: str = "") -> dict[str, Any]:
    """Optimizer, schedule, loss, DDP/compile/EMA, resume, then :meth:`Trainer.fit` and the summary. ``resume``:
    the checkpoint to continue; ``named``: the one the command names, when :func:`preflight.resume_point` chose a
    later one."""
    ctx, metrics = run.ctx, run.metrics
    t = cfg.TRAIN
    checkpointer = Checkpointer(cfg.OUTPUT, cfg.KEEP_LAST, writer=ctx.is_main, warn=metrics.warn)
    check_lists_overlap(run, cfg)  # before the resume below, which quarantines again what the stopped run had
    check_classes_trained(run, cfg)
    # The checkpoint first: its record of the videos quarantined during the run plans the data as that run did,
    # and the steps per epoch, the ranks' plan check and the trainer's layout comparison all count that plan.
    located = locate_checkpoint(resume, t.AUTO_RESUME, checkpointer, ctx)
    if not located.ends_training(t.EPOCHS):
        restore_data_plan(run.train_loader, located, ctx, metrics.warn)
    trainer = _build_trainer(run, cfg, checkpointer, _plan_steps_per_epoch(run, cfg))
    trainer.resume(resume, auto=t.AUTO_RESUME, named=named, located=located)
    past = _past_the_epochs(located, t.EPOCHS, trainer.state.global_step)
    del located  # the checkpoint's tensors are in the model and optimizer now
    finished = trainer.state.epoch >= t.EPOCHS  # resumed from the last epoch's checkpoint (before its final test)
    if finished and _results_are_current(cfg.OUTPUT, trainer.state.last_checkpoint, ctx):
        where = past or f"(epoch {t.EPOCHS}/{t.EPOCHS}, step {trainer.state.global_step})"
        metrics.info(f"the run in {cfg.OUTPUT} is finished {where}: nothing to train; its summary.json and results "
                     "are kept as they are (raise TRAIN.EPOCHS, with TRAIN.ALLOW_CONFIG_CHANGE True, to train further)"
                     + _evaluation_summary_note(cfg.OUTPUT))
        return trainer.outcome()
    global_batch = t.BATCH_SIZE * t.ACCUMULATION_STEPS * ctx.world_size
    precision, why = chosen_precision(t.PRECISION, ctx.device)
    metrics.info(f"training on {cfg.DATA.DATASET}: {counted(t.EPOCHS, 'epoch')} x "
                 f"{counted(trainer.opts.steps_per_epoch, 'step')}, "
                 f"global batch {global_batch}, precision {precision} ({why})")
    try:
        if finished:
            metrics.info(f"the run in {cfg.OUTPUT} finished training{' ' + past if past else ''}, but its "
                         f"summary.json is missing, damaged or older than {trainer.state.last_checkpoint}: writing it")
            result = trainer.evaluate_finished()
        else:
            result = trainer.fit()
        _write_train_summary(run, cfg, trainer, result, finished)
    except StoppedOutsideTraining as stop:
        # After the last epoch's checkpoint: with TRAIN.AUTO_RESUME False the same command would start over from
        # step 0, moving that checkpoint aside, so the line names the --resume that writes the summary.
        if (finished or trainer.trained) and trainer.state.last_checkpoint:
            raise stop.after_training(trainer.state.last_checkpoint, t.AUTO_RESUME) from None
        raise
    return result


def _plan_steps_per_epoch(run: Run, cfg) -> int:
    """The optimizer steps of an epoch, the same on every rank (else a ConfigError); the training loader is told
    how many micro-batches they use."""
    t = cfg.TRAIN
    # At least 1: the training loader refuses a list short of one global batch (TRAIN.BATCH_SIZE x
    # TRAIN.ACCUMULATION_STEPS x world size) when it is built, naming what to change
    steps_per_epoch = len(run.train_loader) // t.ACCUMULATION_STEPS
    check_countable_run(t.EPOCHS, steps_per_epoch)
    check_ranks_plan_alike(run.ctx, cfg.DATA.TRAIN_FILE, steps_per_epoch, run.train_loader.plan_fingerprint())
    if hasattr(run.train_loader, "use_batches"):  # the micro-batches short of a whole step: never decoded
        run.train_loader.use_batches(steps_per_epoch * t.ACCUMULATION_STEPS)
    return steps_per_epoch


def _build_trainer(run: Run, cfg, checkpointer: Checkpointer, steps_per_epoch: int) -> Trainer:
    """The Trainer of ``cfg``: optimizer, schedule, precision and loss scaler, mixup, loss, the DDP/compiled model
    and its EMA copy, and the final test's loader; not resumed yet."""
    ctx, t = run.ctx, cfg.TRAIN
    optimizer = build_optimizer(t, run.model, ctx.device)
    scheduler = build_scheduler(t, optimizer, steps_per_epoch)
    amp_dtype, needs_scaler = resolve_precision(t.PRECISION, ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type) if needs_scaler else None
    mix = cfg.AUG.MIXUP > 0 or cfg.AUG.CUTMIX > 0
    mixup = VideoMixup(cfg.AUG.MIXUP, cfg.AUG.CUTMIX, cfg.AUG.MIXUP_SWITCH_PROB, cfg.AUG.LABEL_SMOOTH,
                       cfg.DATA.NUM_CLASSES, seed=cfg.SEED, rank=ctx.rank,
                       partners=cfg.AUG.MIXUP_PARTNERS) if mix else None
    loop_model, ema = models_for_training(run.model, ctx, t)
    final_views = (cfg.TEST.FINAL_NUM_CLIP, cfg.TEST.FINAL_NUM_CROP)

    def make_test_loader():
        return run.make_test_loader(*final_views) if run.make_test_loader is not None else run.val_loader

    opts = TrainOptions(
        epochs=t.EPOCHS, steps_per_epoch=steps_per_epoch, accumulation_steps=t.ACCUMULATION_STEPS,
        clip_grad=t.CLIP_GRAD, amp_dtype=amp_dtype, skip_nonfinite=t.SKIP_NONFINITE, save_freq=cfg.SAVE_FREQ,
        save_steps=cfg.SAVE_STEPS, eval_freq=cfg.TEST.EVAL_FREQ, final_test=cfg.TEST.FINAL_NUM_CLIP > 0,
        final_test_is_val=final_views == (cfg.TEST.NUM_CLIP, cfg.TEST.NUM_CROP),
        num_classes=cfg.DATA.NUM_CLASSES, save_minutes=cfg.SAVE_MINUTES, adopt_config=t.ALLOW_CONFIG_CHANGE,
        auto_resume=t.AUTO_RESUME)
    return Trainer(
        model=loop_model, optimizer=optimizer, scheduler=scheduler,
        criterion=build_criterion(cfg.AUG.LABEL_SMOOTH, mix),
        train_loader=run.train_loader, val_loader=run.val_loader,
        checkpointer=checkpointer,
        metrics=run.metrics, ctx=ctx, opts=opts, config_yaml=cfg.dump(), mixup=mixup, scaler=scaler, ema=ema,
        make_test_loader=make_test_loader, class_names=_class_names(cfg),
        test_setting=progress_setting(cfg, final_views))


def _write_train_summary(run: Run, cfg, trainer: Trainer, result: dict[str, Any], finished: bool) -> None:
    """summary.json and the run's closing lines (:func:`_finish`), with every loader's counts; a run ``finished``
    before this attempt (only its summary written now) takes those its earlier attempt logged (``recalled_counts``)."""
    ctx, metrics = run.ctx, run.metrics
    final_test = _data_counts(run.test_loaders[-1], ctx, "test_") if run.test_loaders else {}
    counts = {**_data_counts(run.train_loader, ctx, "train_"), **_data_counts(run.val_loader, ctx, "val_"),
              **final_test}
    # The paths absolute (recorded_path): a relative one names its file only from the run's working folder.
    resumed_from = trainer.state.resumed_from if finished else trainer.resumed_from
    _finish(metrics, ctx, cfg, {"mode": "train", "dataset": cfg.DATA.DATASET, "best_top1": result["best_top1"],
                                "best_epoch": result["best_epoch"],
                                "last_checkpoint": recorded_path(result["last_checkpoint"]),
                                "output": recorded_path(cfg.OUTPUT),
                                "pretrained": recorded_path(cfg.MODEL.PRETRAINED) or None,
                                "resumed_from": recorded_path(resumed_from),
                                **(metrics.recalled_counts(counts) if finished else counts)})
