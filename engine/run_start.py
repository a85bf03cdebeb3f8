"""The start of a run in OUTPUT: the process seeded, OUTPUT's run lock taken, what earlier runs left there set
aside, and the run's logger opened (:func:`open_run`).

Rank 0 takes the lock and every rank learns the outcome before it opens anything in OUTPUT; rank 0 alone moves the
earlier files (``run_files`` moves them, this module decides which).
"""

from __future__ import annotations

import os

import torch

from . import distributed as dist_utils
from . import liveness
from evautil.errors import some_names
from evautil.files import make_output_folder, same_path
from evautil.workers import sendable_error

from .checkpointing import Checkpointer, starts_fresh
from .distributed import DistContext
from .metrics import MetricLogger
from .precision import emulated_bf16_warning, precision_name, resolve_precision
from .process_end import end_line_said_by_rank_zero
from .resume_config import check_resume_config, saved_config
from .run_files import claim_output, move_aside, move_earlier_results, move_earlier_run, release_output, results_files

__all__ = ["open_run"]


def open_run(cfg, ctx: DistContext, resume: str = "", resume_note: str = "",
             resumed: tuple[str, dict] | None = None) -> MetricLogger:
    """Seed the process, check the precision fits the device, and open the run's logger (a training run's writes
    config.yaml; an evaluation's is written with its results, ``runner.only_test``). ``resume_note``: why the run
    resumes another checkpoint than the one named (``preflight.resume_point``).
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
    slow_bf16 = emulated_bf16_warning(cfg.TRAIN.PRECISION, ctx.device)  # bf16 set on a V100 or a T4: it runs
    if slow_bf16:
        metrics.warn(slow_bf16)
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
    attempt of the same command wrote (``preflight.resume_point``): nothing moves, as for TRAIN.AUTO_RESUME (a best.pth
    that attempt saved after it stays the score to beat).
    """
    out = cfg.OUTPUT
    reads = [resume, cfg.MODEL.PRETRAINED]
    if cfg.TEST.ONLY_TEST:
        moved = move_earlier_results(out)
        why = "this evaluation would overwrite them (config.yaml: a copy, the file stays until its results)"
    elif starts_fresh(out, resume, cfg.TRAIN.AUTO_RESUME):
        moved = move_earlier_run(out, keep=reads)
        why = ("this run starts from step 0 (no --resume, and TRAIN.AUTO_RESUME found no ckpt_epoch_*.pth or "
               "ckpt_step_*.pth there to resume)" if cfg.TRAIN.AUTO_RESUME
               else "this run starts from step 0 (no --resume, TRAIN.AUTO_RESUME False)")
    elif resume and saved_config(resume, resumed[1] if resumed is not None else None) is None:
        return ""
    elif resume and not same_path(os.path.dirname(os.path.abspath(resume)), out):
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
    # best.pth alone, with TRAIN.AUTO_RESUME on: the user expected a resume, and the line said "TRAIN.AUTO_RESUME True"
    # and step 0 side by side, without why or the way to start from those weights
    best_only = (cfg.TRAIN.AUTO_RESUME and not resume and not cfg.TEST.ONLY_TEST and "best.pth" in names
                 and not any(n.startswith("ckpt_") for n in names))
    return (f"{out} held an earlier run's files and {why}: moved {len(names)} of them ({some_names(names, 5)}) to "
            f"{dest}" + (f"; its best.pth holds the best evaluation's weights only (no optimizer, schedule or data "
                         f"position), which no run resumes: to train from those weights, stop this run and give "
                         f"--pretrained {os.path.join(dest, 'best.pth')}" if best_only else ""))


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
