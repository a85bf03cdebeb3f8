"""Runs a training or an evaluation from ready objects: the engine's half of the wiring.

The engine imports neither DALI nor the model package. ``wiring.py`` (beside ``train.py``) builds the concrete
objects in one visible order: :func:`open_run` (seeds, logger), the loaders, the model, then the weights chosen by
:func:`weights_to_load`; it hands them to :class:`Run`, and :func:`train` or :func:`only_test` runs them.
Evaluation needs no trainer (``evaluate.evaluate_and_log``). :func:`open_run` takes OUTPUT's run lock on rank 0
and tells every rank the outcome; :func:`check_lists_overlap` warns of validation videos that training uses and
passes training's quarantines on to the validation index.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import distributed as dist_utils
from . import liveness
from configs import ConfigError
from evautil.errors import some_names, weights_misfit
from evautil.files import make_output_folder
from evautil.flops import model_size_text
from evautil.progress import counted
from evautil.workers import sendable_error

from .checkpointing import Checkpointer, CheckpointError, check_output_dir, checkpoint_files, starts_fresh
from .distributed import DistContext, all_gather_objects
from .evaluate import evaluate_and_log, read_label_names
from .loader_stats import loader_stats
from .losses import VideoMixup, build_criterion
from .metrics import MetricLogger, print_plan
from .optim import build_optimizer, build_scheduler
from .resume_config import check_resume_config, saved_config
from .run_files import (EARLIER_RUNS_DIR, claim_output, move_aside, move_earlier_results, move_earlier_run,
                        recorded_path, release_output, results_files)
from .plots import plot_finished_run
from .preemption import StoppedOutsideTraining, run_complete
from .process_end import end_line_said_by_rank_zero
from .train_loop import (Trainer, TrainOptions, locate_checkpoint, precision_name, resolve_precision,
                         restore_data_plan)

__all__ = ["Run", "WeightsChoice", "check_files", "where_they_come_from", "print_dry_run_plan", "open_run",
           "weights_to_load", "announce_model", "check_weights_fit", "check_lists_overlap", "train", "only_test"]


def scores_checkpoint(cfg, resume: str = "") -> bool:
    """Whether an evaluate-only run scores a checkpoint (``resume``, else OUTPUT's newest usable one) rather than
    MODEL.PRETRAINED. Told by the files' names: which one is newest takes parsing them, which the check of the one
    to evaluate does once (``wiring.check_weight_files``; several GB for EVA-1B)."""
    return bool(resume or checkpoint_files(cfg.OUTPUT))


def resume_point(cfg, resume: str) -> tuple[str, str]:
    """The checkpoint a training run given ``--resume resume`` continues, and a note when it is another one.

    A requeued job repeats its command: when OUTPUT's newest checkpoint was written by an earlier attempt that
    started from ``resume`` (TrainState.origin), the run goes on from that checkpoint instead of starting over from
    ``resume`` (and moving the progress aside). TRAIN.AUTO_RESUME False keeps ``resume`` as given. The file it
    settles on, as parsed to find it, serves the run's check of that file (``Checkpointer.continuation_of``).
    """
    if not resume or cfg.TEST.ONLY_TEST or not cfg.TRAIN.AUTO_RESUME:
        return resume, ""
    later = Checkpointer(cfg.OUTPUT, writer=False).continuation_of(resume)
    if later is None or _same_path(later, resume):
        return resume, ""
    return later, (f"--resume {resume}: {later} continues it (an earlier attempt of this run started from it), so "
                   f"the run goes on from there (with TRAIN.AUTO_RESUME False it would start over from {resume})")


def where_they_come_from(missing: list[str], only_test: bool = False) -> str:
    """What makes the missing files, for a first run that has none of them yet. ``only_test``: a ``--resume`` is
    weights to evaluate (a released file among them), not a training run's checkpoint to continue."""
    hints = []
    if any(m.startswith("DATA.") for m in missing):
        hints.append("the demo's clips and lists: python tools/make_synthetic_dataset.py --out data/synthetic (or "
                     "make demo); Kinetics lists and labels: python tools/prepare_kinetics.py lists")
    resume = any(m.startswith("--resume") for m in missing)
    if any(m.startswith("MODEL.") for m in missing) or (resume and only_test):
        hints.append("released weights and class mappings: README, Checkpoints (the recipes read checkpoints/)")
    if resume and not only_test:  # released weights are no training state: sending the user there was a dead end
        hints.append("a training --resume continues a checkpoint an earlier run wrote to its OUTPUT (ckpt_epoch_*.pth, "
                     "ckpt_step_*.pth); released weights start a run as MODEL.PRETRAINED")
    return f" ({'; '.join(hints)})" if hints else ""


def reads_pretrained(cfg, resume: str = "") -> bool:
    """Whether a training run reads MODEL.PRETRAINED: only when it starts from step 0. A run that resumes (``resume``,
    or TRAIN.AUTO_RESUME with a checkpoint in OUTPUT) takes every weight from the checkpoint, so the pretrained file
    (gigabytes for the recipes, maybe gone since the first attempt) is neither needed nor loaded."""
    return bool(cfg.MODEL.PRETRAINED) and starts_fresh(cfg.OUTPUT, resume, cfg.TRAIN.AUTO_RESUME)


def check_files(cfg, only_test: bool, resume: str = "") -> None:
    """Fail with one message naming every missing input file (lists, labels, weights, class mapping).

    Evaluate-only without ``--resume`` scores the newest checkpoint in OUTPUT, else MODEL.PRETRAINED; with
    neither it fails (random weights are never evaluated silently). Evaluating a checkpoint does not need
    MODEL.CLASS_MAPPING: the mapping is only used when the checkpoint's head is larger than the model's.
    """
    wanted = [("DATA.VAL_FILE", cfg.DATA.VAL_FILE)]
    checkpoint = only_test and scores_checkpoint(cfg, resume)
    if not only_test:
        wanted.insert(0, ("DATA.TRAIN_FILE", cfg.DATA.TRAIN_FILE))
        if reads_pretrained(cfg, resume):
            wanted.append(("MODEL.PRETRAINED", cfg.MODEL.PRETRAINED))
    elif not checkpoint:
        if not cfg.MODEL.PRETRAINED:
            raise ConfigError(f"--only_test: nothing to evaluate: no --resume given, no checkpoint (ckpt_*.pth) in "
                              f"OUTPUT = {cfg.OUTPUT}, and MODEL.PRETRAINED is empty")
        wanted.append(("MODEL.PRETRAINED", cfg.MODEL.PRETRAINED))
    wanted.append(("DATA.LABEL_LIST", cfg.DATA.LABEL_LIST))
    if not checkpoint:
        wanted.append(("MODEL.CLASS_MAPPING", cfg.MODEL.CLASS_MAPPING))
    wanted.append(("--resume", resume))
    check_output_dir(cfg.OUTPUT)
    # hf:// weight references are fetched (and a failure named) by wiring.check_weight_files, before the index.
    hub = {"MODEL.PRETRAINED"} | ({"--resume"} if only_test else set())
    # A folder is the usual slip (the data folder given for its list): say so, it is not missing. A flag is named
    # as typed (--resume PATH), a key as KEY = PATH.
    missing = [f"{key}{' ' if key.startswith('--') else ' = '}{path}"
               + (" (a folder, not a file)" if os.path.isdir(path) else "") for key, path in wanted
               if path and not (key in hub and path.startswith("hf://")) and not os.path.isfile(path)]
    if not cfg.DATA.VAL_FILE or (not only_test and not cfg.DATA.TRAIN_FILE):
        missing += [f"{k} is empty" for k, p in wanted[:2] if k.startswith("DATA.") and not p]
    if missing:
        raise FileNotFoundError("missing input files: " + "; ".join(missing) + where_they_come_from(missing, only_test))
    _class_names(cfg)  # its format now, not after the lists are indexed and the loaders built


def print_dry_run_plan(cfg, *, num_params: int, forward_flops: float, val_videos: int, train_videos: int,
                       decode_device: str, evaluates: str = "", train_found: int | None = None,
                       starts_from: str = "") -> dict[str, Any]:
    """Print what a run would do (from facts the caller gathered without training anything) and return it.
    ``evaluates``: the checkpoint an evaluate-only run scores, as its check found it ("": MODEL.PRETRAINED).
    ``train_found``: the listed training videos that exist (None: all), which a run's epochs are made of.
    ``starts_from``: where a training run starts (the checkpoint it resumes, or step 0 and its weights).

    Raises:
        ValueError: a bad EVA_WAIT_TIMEOUT_MIN or EVA_HEARTBEAT_TIMEOUT_S, with the line a run of several processes
            would stop on (the plan is usually made by one process for a job of several), RANK or WORLD_SIZE, or
            with several processes a MASTER_ADDR or MASTER_PORT that is unset, no port or a host name that does not
            resolve (``distributed.rendezvous_address``).
    """
    dist_utils.wait_settings()
    only_test = cfg.TEST.ONLY_TEST
    world = dist_utils.rank_and_world_size()[1]
    meet = dist_utils.rendezvous_address(world) if world > 1 else ""
    global_batch = cfg.TRAIN.BATCH_SIZE * cfg.TRAIN.ACCUMULATION_STEPS * world
    found = train_videos if train_found is None else train_found
    plan = {
        "mode": "evaluate only" if only_test else "train",
        "model": cfg.MODEL.ARCH,
        "parameters": num_params,
        "GFLOPs per clip (forward)": forward_flops / 1e9,
        "clip": f"{cfg.DATA.NUM_FRAMES} x 3 x {cfg.DATA.INPUT_SIZE} x {cfg.DATA.INPUT_SIZE}",
        "processes": world,
        **({"rendezvous (MASTER_ADDR:PORT)": meet} if meet else {}),
        "global batch (B x ACC x world)": f"{global_batch} = {cfg.TRAIN.BATCH_SIZE} x "
                                          f"{cfg.TRAIN.ACCUMULATION_STEPS} x {world}",
        "train videos (listed)": train_videos,
        **({} if found == train_videos else {"train videos (found)": found}),
        "iterations per epoch": found // global_batch,
        "epochs": cfg.TRAIN.EPOCHS,
        **({"starts from": starts_from} if starts_from and not only_test else {}),
        "val videos (listed)": val_videos,
        # An evaluate-only run tests with TEST.NUM_CLIP x NUM_CROP views; training validates with those and ends
        # with the final test's FINAL_NUM_CLIP x FINAL_NUM_CROP (none when FINAL_NUM_CLIP is 0).
        **({"test views (clips x crops)": f"{cfg.TEST.NUM_CLIP} x {cfg.TEST.NUM_CROP}"} if only_test else {
            "val views (clips x crops)": f"{cfg.TEST.NUM_CLIP} x {cfg.TEST.NUM_CROP}",
            "final test (clips x crops)": (f"{cfg.TEST.FINAL_NUM_CLIP} x {cfg.TEST.FINAL_NUM_CROP}"
                                           if cfg.TEST.FINAL_NUM_CLIP > 0 else "none")}),
        "data decode device": decode_device,
        "output": cfg.OUTPUT,
    }
    if only_test:  # no training: leave out the rows that would read 0
        for key in ("global batch (B x ACC x world)", "train videos (listed)", "iterations per epoch", "epochs"):
            del plan[key]
        plan["evaluates"] = evaluates or f"MODEL.PRETRAINED = {cfg.MODEL.PRETRAINED}"
    print_plan(plan)
    if not only_test and found < global_batch:  # the run stops on this, but only after indexing the lists
        counted = "listed" if found == train_videos else "found"
        raise ValueError(f"DATA.TRAIN_FILE {cfg.DATA.TRAIN_FILE}: {found} {counted} training videos, fewer than one "
                         f"global batch (TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} x TRAIN.ACCUMULATION_STEPS "
                         f"{cfg.TRAIN.ACCUMULATION_STEPS} x world size {world} = {global_batch}): the run would stop "
                         "before its first step; lower TRAIN.BATCH_SIZE or list more videos")
    return plan


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


def open_run(cfg, ctx: DistContext, resume: str = "", resume_note: str = "",
             resumed: tuple[str, dict] | None = None) -> MetricLogger:
    """Seed the process, check the precision fits the device, and open the run's logger (a training run's writes
    config.yaml; an evaluation's is written with its results, :func:`only_test`). ``resume_note``: why the run
    resumes another checkpoint than the one named (:func:`resume_point`).
    ``resumed``: the checkpoint the run resumes as (path, state) already read (memory-mapped), so that its config
    is not parsed again."""
    dist_utils.seed_everything(cfg.SEED + ctx.rank)
    amp_dtype, _ = resolve_precision(cfg.TRAIN.PRECISION, ctx.device)  # one the device cannot run fails here
    # A resume with a changed config fails here too, before config.yaml is rewritten with what would not run.
    config_change = "" if cfg.TEST.ONLY_TEST else check_resume_config(cfg, resume, resumed)
    if ctx.device.type == "cpu":
        # AdamW's second moments of small weights decay into the denormal range, where x86 float arithmetic is
        # microcoded: some optimizer steps of the CPU demo ran ~100x slower. Flushing them to zero changes nothing
        # that matters for training (GPU kernels flush denormals in their fast paths too).
        torch.set_flush_denormal(True)
    _claim_output_on_every_rank(cfg.OUTPUT, ctx)
    try:
        moved = _set_aside_earlier_files(cfg, resume, resumed, continued=bool(resume_note)) if ctx.is_main else None
        metrics = MetricLogger(cfg.OUTPUT, ctx.rank, ctx.world_size, ctx.device, print_freq=cfg.PRINT_FREQ,
                               frames_per_clip=cfg.DATA.NUM_FRAMES, tensorboard=cfg.LOG.TENSORBOARD,
                               nvml=cfg.LOG.NVML, progress_bar=cfg.LOG.PROGRESS_BAR,
                               precision=precision_name(amp_dtype))
    except BaseException:
        release_output(cfg.OUTPUT)
        raise
    liveness.log_to(metrics, ctx)  # a rank that stops answering is named in this run's log too
    if not cfg.TEST.ONLY_TEST:
        metrics.write_config(cfg.dump())
    if resume_note:
        metrics.info(resume_note)
    if moved:
        metrics.warn(moved)
    if config_change:
        metrics.warn(config_change)
    return metrics


def _claim_output_on_every_rank(output_dir: str, ctx: DistContext) -> None:
    """Rank 0 makes OUTPUT and takes its run lock (one run at a time there, before anything moves or is written);
    every other rank learns the outcome before it opens anything in OUTPUT. A rank that went on alone opened its
    log while rank 0 was refused, and appended a lost-connection error to the running run's log_rank<r>.txt.

    Raises:
        ValueError: rank 0's refusal (another run holds OUTPUT, the folder cannot be made), on every rank.
    """
    refusal: Exception | None = None
    if ctx.is_main:
        try:
            make_output_folder(output_dir, "OUTPUT =")  # not by opening its lock: that failure named only an errno
            claim_output(output_dir)
        except Exception as e:  # noqa: BLE001 - sent to the other ranks, then raised here too
            refusal = e
    if ctx.distributed:
        sent = dist_utils.broadcast_object(sendable_error(refusal) if ctx.is_main else None, ctx)
        refusal = refusal if ctx.is_main else sent
    if refusal is not None:
        if not ctx.is_main:  # rank 0 prints it: once on the console, not once per rank
            end_line_said_by_rank_zero()
        raise refusal


def _set_aside_earlier_files(cfg, resume: str, resumed: tuple[str, dict] | None = None,
                             continued: bool = False) -> str:
    """Before anything of this run is written to OUTPUT, move aside what another run (or attempt) left there that
    this one would mix with, rotate away or overwrite; returns the warning saying so ("" when nothing moved).

    - a fresh start: the earlier run's files (its checkpoints would outrank this run's in the rotation, its lines
      would mix into metrics.jsonl);
    - ``--resume`` of a checkpoint from another folder: OUTPUT's earlier run, for the same reasons;
    - ``--resume`` of an older checkpoint of OUTPUT: the checkpoints, best.pth and results after it, which this
      run supersedes (they would outrank its own, and TRAIN.AUTO_RESUME would later pick them);
    - an evaluate-only run: the results it would overwrite (e.g. the training run's summary.json).
    Files this run reads (``--resume``, MODEL.PRETRAINED) never move; nothing moves for a ``--resume`` file that is
    not a resumable checkpoint (``wiring.check_weight_files`` named it before this runs). ``resumed``: (``resume``,
    its state) as that check read it (not parsed again). ``continued``: ``resume`` is the checkpoint an earlier
    attempt of the same command wrote (:func:`resume_point`): nothing moves, as for TRAIN.AUTO_RESUME (a best.pth
    that attempt saved after it stays the score to beat).
    """
    out = cfg.OUTPUT
    reads = [resume, cfg.MODEL.PRETRAINED]
    if cfg.TEST.ONLY_TEST:
        moved = move_earlier_results(out)
        why = "this evaluation would overwrite them (config.yaml: a copy, the file stays until its results)"
    elif starts_fresh(out, resume, cfg.TRAIN.AUTO_RESUME):
        moved = move_earlier_run(out, keep=reads)
        why = f"this run starts from step 0 (no --resume, TRAIN.AUTO_RESUME {cfg.TRAIN.AUTO_RESUME})"
    elif resume and saved_config(resume, resumed[1] if resumed is not None else None) is None:
        return ""
    elif resume and not _same_path(os.path.dirname(os.path.abspath(resume)), out):
        moved, why = move_earlier_run(out, keep=reads), f"this run continues {resume}, a checkpoint from elsewhere"
    elif continued:  # the same run going on from its own newest checkpoint: nothing of it is superseded
        return ""
    elif resume:
        moved = move_aside(out, _superseded_by(out, resume, resumed[1] if resumed is not None else None))
        why = f"this run goes back to {resume}, which they followed"
    else:
        return ""
    if moved is None:
        return ""
    dest, names = moved
    return (f"{out} held an earlier run's files and {why}: moved {len(names)} of them ({', '.join(names[:4])}"
            f"{', ...' if len(names) > 4 else ''}) to {dest}")


def _same_path(a: str, b: str) -> bool:
    """Whether two names are one file or folder (a symlink or a bind mount may give it two names)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet
        return os.path.realpath(a) == os.path.realpath(b)


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


def _superseded_by(out: str, resume: str, state: dict | None = None) -> list[str]:
    """The files of OUTPUT written after checkpoint ``resume`` of it: later checkpoints, a later best.pth and,
    when anything came later, the results of that later branch. ``state``: ``resume`` as already read."""
    checkpointer = Checkpointer(out, writer=False)
    later = [os.path.basename(p) for p in checkpointer.newer_than(resume)]
    step = int(state["global_step"]) if state is not None else Checkpointer.step_of(resume)
    best_step = checkpointer.best_step()  # remembered for the trainer's best_after (Checkpointers share it)
    if step is not None and best_step is not None and best_step > step:
        later.append("best.pth")
    return later + results_files(out) if later else []


@dataclass(frozen=True)
class WeightsChoice:
    """Weights to load into a freshly built model: ``path`` in ``mode`` ('eva', 'eva_k722', ...), with an
    optional class mapping; ``checkpoint``: one of our checkpoints being evaluated (it must fit the model)."""

    path: str
    mode: str
    class_mapping: str | None
    checkpoint: bool

    def describe(self) -> str:
        return self.path if self.checkpoint else f"MODEL.PRETRAINED = {self.path}"


def weights_to_load(cfg, metrics: MetricLogger | None, resume: str = "", newest: str = "") -> WeightsChoice | None:
    """The one set of weights the model starts from. Training: MODEL.PRETRAINED (a resumed checkpoint is applied
    later by the trainer, with the optimizer). Evaluate-only: ``resume``, else the newest usable checkpoint in
    OUTPUT (damaged ones are named and skipped), else MODEL.PRETRAINED. None: keep the initial weights.
    ``metrics`` None (a check before the run's log is open): the choice is made without a word. ``newest``:
    OUTPUT's newest usable checkpoint as the run's check found it (``wiring.check_weight_files``), not looked for
    again (each look parses every checkpoint there)."""
    mapping = cfg.MODEL.CLASS_MAPPING or None
    if cfg.TEST.ONLY_TEST and scores_checkpoint(cfg, resume):
        path = resume or newest
        if not path:
            warn = metrics.warn if metrics is not None else None
            # its path only: memory-mapped, its CRC-32 check is the one the load right after relies on (not reread)
            found = Checkpointer(cfg.OUTPUT, writer=False, warn=warn).find_latest(mmap=True)
            path = found[0] if found else ""
        if path:
            return WeightsChoice(path, "eva_k722", mapping, checkpoint=True)
    if cfg.MODEL.PRETRAINED and not cfg.TEST.ONLY_TEST and not reads_pretrained(cfg, resume):
        if metrics is not None:
            metrics.info(f"MODEL.PRETRAINED = {cfg.MODEL.PRETRAINED} is not read: the run resumes a checkpoint, "
                         "whose weights replace it")
        return None
    if cfg.MODEL.PRETRAINED:
        return WeightsChoice(cfg.MODEL.PRETRAINED, cfg.MODEL.PRETRAINED_MODE, mapping, checkpoint=False)
    return None


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


def check_weights_fit(cfg, choice: WeightsChoice, missing: list[str], lacked: list[str]) -> None:
    """Weights being evaluated (a checkpoint, or MODEL.PRETRAINED in an evaluate-only run without one) must fill
    every parameter of the model, and the model must have every layer they trained (``lacked``: see
    ``models.checkpoint.layers_the_model_lacks``); raise CheckpointError naming them."""
    if (choice.checkpoint or cfg.TEST.ONLY_TEST) and (missing or lacked):
        raise CheckpointError(f"{'checkpoint ' if choice.checkpoint else ''}{choice.describe()} "
                              f"{weights_misfit(cfg.MODEL.ARCH, cfg.DATA.NUM_CLASSES, missing, lacked)}")


def announce_weights(metrics: MetricLogger, choice: WeightsChoice, notes: list[str], missing: list[str],
                     lacked: list[str]) -> None:
    """Log where the weights came from and what their conversion changed (a resampled positional embedding, a head
    dropped for another class count and left at its initialisation): a fine-tuning run must say what it starts
    from. (An evaluation names its checkpoint when it starts scoring.)"""
    if not choice.checkpoint:
        metrics.info(f"starting from {choice.describe()} (MODEL.PRETRAINED_MODE {choice.mode})")
    for note in notes:
        metrics.info(f"  weights: {note}")
    if missing:
        metrics.info(f"  weights: left at their initialisation: {some_names(missing)}")
    if lacked:  # the model is not the one these weights trained: a shallower or otherwise built MODEL.ARCH
        metrics.warn(f"weights: not used, the model has no such layer: {some_names(lacked)}")


def _data_counts(loader: Any, ctx: DistContext, prefix: str) -> dict[str, Any]:
    """A loader's data-failure counters (over all ranks) for the end-of-run summary, without the path list."""
    return {k: v for k, v in loader_stats(loader, ctx, prefix).items() if not k.endswith("skipped")}


def _class_names(cfg) -> dict[int, str] | None:
    return read_label_names(cfg.DATA.LABEL_LIST, cfg.DATA.NUM_CLASSES) if cfg.DATA.LABEL_LIST else None


def only_test(run: Run, cfg) -> dict[str, Any]:
    """Evaluate the model as loaded (see :func:`weights_to_load`) on the test loader and write the summary."""
    if run.weights == "initial weights":  # check_files refuses this case; kept for callers that skip it
        run.metrics.warn("no checkpoint given or found: evaluating the initial weights")
    else:
        run.metrics.info(f"evaluating {run.weights}")
    amp_dtype, _ = resolve_precision(cfg.TRAIN.PRECISION, run.ctx.device)
    result = evaluate_and_log(run.model, run.val_loader, run.ctx, run.metrics, split="test",
                              num_classes=cfg.DATA.NUM_CLASSES, class_names=_class_names(cfg), autocast_dtype=amp_dtype,
                              checkpoint=run.weights_file)
    # Only now: stopped before, the evaluation leaves OUTPUT's config.yaml that of the checkpoints and log beside it
    # (run_files.move_earlier_results set a copy aside with the results this one replaces).
    run.metrics.write_config(cfg.dump())
    evaluated = run.weights  # the file's path, or "MODEL.PRETRAINED = <path>": that path, absolute, in the summary
    if run.weights_file and evaluated.endswith(run.weights_file):
        evaluated = evaluated[:-len(run.weights_file)] + recorded_path(run.weights_file)
    _finish(run.metrics, run.ctx, cfg, {"mode": "evaluate only", "dataset": cfg.DATA.DATASET, "evaluated": evaluated,
                                         **_data_counts(run.val_loader, run.ctx, "test_")})
    return result


def _finish(metrics: MetricLogger, ctx: DistContext, cfg, fields: dict[str, Any]) -> None:
    """summary.json, after which the run is complete (a stop signal no longer stops it), then the summary's table
    and the plots (rank 0)."""
    metrics.summary(fields, written=run_complete)
    if ctx.is_main:
        plot_finished_run(cfg.OUTPUT, metrics.info, metrics.warn)


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


def train(run: Run, cfg, resume: str = "", named: str = "") -> dict[str, Any]:
    """Optimizer, schedule, loss, DDP/compile/EMA, resume, then :meth:`Trainer.fit` and the summary. ``resume``:
    the checkpoint to continue; ``named``: the one the command names, when :func:`resume_point` chose a later one."""
    ctx, metrics, model = run.ctx, run.metrics, run.model
    t = cfg.TRAIN
    checkpointer = Checkpointer(cfg.OUTPUT, cfg.KEEP_LAST, writer=ctx.is_main, warn=metrics.warn)
    check_lists_overlap(run, cfg)  # before the resume below, which quarantines again what the stopped run had
    # The checkpoint first: its record of the videos quarantined during the run plans the data as that run did,
    # and the steps per epoch, the ranks' plan check and the trainer's layout comparison all count that plan.
    located = locate_checkpoint(resume, t.AUTO_RESUME, checkpointer, ctx)
    if not located.ends_training(t.EPOCHS):
        restore_data_plan(run.train_loader, located, ctx, metrics.warn)
    steps_per_epoch = len(run.train_loader) // t.ACCUMULATION_STEPS
    if steps_per_epoch < 1:
        raise ConfigError(f"{cfg.DATA.TRAIN_FILE}: {len(run.train_loader)} batches per process is less than one "
                         f"optimizer step (TRAIN.ACCUMULATION_STEPS = {t.ACCUMULATION_STEPS})")
    check_ranks_plan_alike(ctx, cfg.DATA.TRAIN_FILE, steps_per_epoch, run.train_loader.plan_fingerprint())
    optimizer = build_optimizer(t, model, ctx.device)
    scheduler = build_scheduler(t, optimizer, steps_per_epoch)
    amp_dtype, needs_scaler = resolve_precision(t.PRECISION, ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type) if needs_scaler else None
    mix = cfg.AUG.MIXUP > 0 or cfg.AUG.CUTMIX > 0
    mixup = VideoMixup(cfg.AUG.MIXUP, cfg.AUG.CUTMIX, cfg.AUG.MIXUP_SWITCH_PROB, cfg.AUG.LABEL_SMOOTH,
                       cfg.DATA.NUM_CLASSES, seed=cfg.SEED, rank=ctx.rank,
                       partners=cfg.AUG.MIXUP_PARTNERS) if mix else None
    loop_model, ema = models_for_training(model, ctx, t)
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
    trainer = Trainer(
        model=loop_model, optimizer=optimizer, scheduler=scheduler,
        criterion=build_criterion(cfg.AUG.LABEL_SMOOTH, mix),
        train_loader=run.train_loader, val_loader=run.val_loader,
        checkpointer=checkpointer,
        metrics=metrics, ctx=ctx, opts=opts, config_yaml=cfg.dump(), mixup=mixup, scaler=scaler, ema=ema,
        make_test_loader=make_test_loader, class_names=_class_names(cfg))
    trainer.resume(resume, auto=t.AUTO_RESUME, named=named, located=located)
    del located  # the checkpoint's tensors are in the model and optimizer now
    finished = trainer.state.epoch >= t.EPOCHS  # resumed from the last epoch's checkpoint (before its final test)
    if finished and _results_are_current(cfg.OUTPUT, trainer.state.last_checkpoint, ctx):
        metrics.info(f"the run in {cfg.OUTPUT} is finished (epoch {t.EPOCHS}/{t.EPOCHS}, step "
                     f"{trainer.state.global_step}): nothing to train; its summary.json and results are kept as they "
                     "are (raise TRAIN.EPOCHS, with TRAIN.ALLOW_CONFIG_CHANGE True, to train further)"
                     + _evaluation_summary_note(cfg.OUTPUT))
        return trainer.outcome()
    global_batch = t.BATCH_SIZE * t.ACCUMULATION_STEPS * ctx.world_size
    precision = str(amp_dtype).replace('torch.', '') if amp_dtype else 'fp32'
    metrics.info(f"training on {cfg.DATA.DATASET}: {t.EPOCHS} epochs x {steps_per_epoch} steps, "
                 f"global batch {global_batch}, precision {precision}")
    try:
        if finished:
            metrics.info(f"the run in {cfg.OUTPUT} finished training, but its summary.json is missing, damaged or "
                         f"older than {trainer.state.last_checkpoint}: writing it")
            result = trainer.evaluate_finished()
        else:
            result = trainer.fit()
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
    except StoppedOutsideTraining as stop:
        # After the last epoch's checkpoint: with TRAIN.AUTO_RESUME False the same command would start over from
        # step 0, moving that checkpoint aside, so the line names the --resume that writes the summary.
        if (finished or trainer.trained) and trainer.state.last_checkpoint:
            raise stop.after_training(trainer.state.last_checkpoint, t.AUTO_RESUME) from None
        raise
    return result
