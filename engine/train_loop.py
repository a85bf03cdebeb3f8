"""The training loop: micro-batches with gradient accumulation, optimizer steps, checkpoints, evaluation.

``Trainer`` holds the objects of a run (model, optimizer, schedule, loaders, checkpointer, metrics) and knows
nothing of the config; ``runner.train`` builds it. ``train_one_epoch`` is the loop over one epoch's batches.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from configs import ConfigError
from evautil.interrupt import on_interrupt

from . import distributed as dist_utils
from .checkpoint_io import load_resumable
from .checkpointing import Checkpointer, CheckpointError
from .distributed import DistContext, all_gather_objects, unwrap
from .evaluate import EvaluationStopped, evaluate_and_log, every_rank_learned
from .loader_stats import loader_stats
from .metrics import MetricLogger
from .preemption import PREEMPTED_EXIT_CODE, Preempted, StepControl, StoppedAfterTraining, interrupted_after
from .resume_state import capture_rng, restore_rng, restore_training_objects
from .run_files import recorded_path
from .telemetry import host_memory_gb
from .test_progress import FinalTestProgress

__all__ = ["TrainOptions", "TrainState", "NonFiniteLossError", "train_one_epoch", "Trainer", "resolve_precision",
           "ResumePoint", "locate_checkpoint", "restore_data_plan"]

# A stop signal during a final test serving as the last validation too (it runs before the epoch's checkpoint)
_FINISHING = "finishing it (the training is done; nothing to resume)"


class NonFiniteLossError(RuntimeError):
    """The loss, or with a finite loss the gradients, became NaN/inf; the message names the step and the last good
    checkpoint."""

    def __init__(self, step: int, epoch: int, loss: float, last_checkpoint: str | None) -> None:
        self.step, self.epoch, self.loss, self.last_checkpoint = step, epoch, loss, last_checkpoint
        where = last_checkpoint or "none saved yet"
        what = f"non-finite loss ({loss})" if not math.isfinite(loss) else f"non-finite gradients (loss {loss:.4f})"
        super().__init__(f"{what} at optimizer step {step} (epoch {epoch + 1}); stopping. "
                         f"Last good checkpoint: {where}. Set TRAIN.SKIP_NONFINITE True to skip such steps.")


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether a GradScaler is needed) for TRAIN.PRECISION on ``device``.

    Raises:
        ConfigError: fp16 on a CPU (no loss scaler there; CPU fp16 autocast is also slow): use bf16 or fp32.
    """
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"TRAIN.PRECISION = 'fp16' needs a CUDA device (loss scaling); this run is on "
                          f"{device.type}: use 'bf16', 'fp32' or 'auto'")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16":
        return torch.bfloat16, False
    if precision == "fp16":
        return torch.float16, True
    return None, False


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """'bf16', 'fp16' or 'fp32' for the autocast dtype :func:`resolve_precision` returned."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, "fp32")


@dataclass
class TrainOptions:
    """How the loop runs (all plain values, taken from the config by train.py)."""

    epochs: int
    steps_per_epoch: int
    accumulation_steps: int = 1
    clip_grad: float = 0.0
    amp_dtype: torch.dtype | None = None
    skip_nonfinite: bool = False
    save_freq: int = 1          # epochs between epoch checkpoints (the last epoch is always saved)
    save_steps: int = 0         # optimizer steps between mid-epoch checkpoints (0: off)
    save_minutes: float = 0.0   # minutes since the last checkpoint that trigger a mid-epoch one (0: off)
    adopt_config: bool = False  # on resume keep this run's optimizer hyperparameters and LR schedule
    auto_resume: bool = True    # TRAIN.AUTO_RESUME: whether the same command continues a stopped run
    eval_freq: int = 1          # epochs between evaluations (0: only at the end)
    final_test: bool = True     # run the final multi-view test after the last epoch
    final_test_is_val: bool = False  # its views are the validation's: one pass serves both
    num_classes: int = 0


@dataclass
class TrainState:
    """Where the run is; saved in every checkpoint."""

    epoch: int = 0              # epoch in progress (0-based)
    global_step: int = 0        # optimizer steps completed over the run
    step_in_epoch: int = 0      # optimizer steps completed in ``epoch``
    best_top1: float = -1.0
    best_epoch: int = -1
    skipped_steps: int = 0
    # global_step minus the LR schedule's position (epoch * steps_per_epoch + step_in_epoch): 0 unless the run
    # resumed with another number of steps per epoch (world size, batch size, list length). Steps keep counting up,
    # so the log and the checkpoints' order stay monotonic, while the schedule follows this run's epochs.
    schedule_offset: int = 0
    # The checkpoint this run was started from with --resume ({"path": real path, "step": its step}), kept by
    # every later attempt: a repeated command that names it again continues from the newest checkpoint instead.
    origin: dict | None = None
    # The checkpoint the attempt that saved this state had continued (its summary's resumed_from), so that a summary
    # written from the logged lines (Trainer.evaluate_finished) names it too.
    resumed_from: str | None = None
    last_checkpoint: str | None = None
    # The epoch in progress's step losses (of the steps not skipped), summed and counted: saved mid-epoch, so that
    # the epoch's mean loss after a resume covers the steps trained before it too.
    epoch_loss_sum: float = 0.0
    epoch_loss_steps: int = 0


def train_one_epoch(model: nn.Module, loader: Iterable[dict], optimizer: torch.optim.Optimizer, scheduler: Any,
                    criterion: nn.Module, state: TrainState, opts: TrainOptions, metrics: MetricLogger,
                    ctx: DistContext, *, mixup: Callable | None = None, scaler: torch.amp.GradScaler | None = None,
                    ema: Any = None, on_step: Callable[[], None] | None = None,
                    control: StepControl | None = None) -> dict[str, float]:
    """Train for the rest of ``state.epoch`` (from ``state.step_in_epoch``) and return ``{'loss', 'steps'}``: the
    epoch's mean loss over the steps that updated the weights (``state.epoch_loss_*``: a resumed epoch's earlier
    steps included) and the number of such steps this call trained. A skipped step (a non-finite loss with
    ``opts.skip_nonfinite``, or one the fp16 loss scaler skips) updates neither weights nor EMA, has no loss and
    counts in ``state.skipped_steps``.

    One optimizer step = ``opts.accumulation_steps`` micro-batches; DDP's gradient all-reduce runs only on the
    last of them (``no_sync`` on the others). The LR of step ``t`` is set with ``scheduler.step_update(t)`` just
    before ``optimizer.step()``. Micro-batches left over at the end of the loader (fewer than one step) are not
    trained on (``runner.train`` has the video loader deliver none: ``VideoLoader.use_batches``). ``on_step``
    runs after every optimizer step (train.py uses it for mid-epoch checkpoints). With ``control``, its stop and
    save flags ride on the step's loss all-reduce (:meth:`StepControl.agree`).

    Raises:
        NonFiniteLossError: a non-finite loss, or non-finite gradients without a loss scaler, with
            ``opts.skip_nonfinite`` off.
    """
    model.train()
    acc = opts.accumulation_steps
    device = ctx.device
    amp = (lambda: torch.autocast(device.type, dtype=opts.amp_dtype)) if opts.amp_dtype else contextlib.nullcontext
    params = [p for g in optimizer.param_groups for p in g["params"]]
    metrics.start_epoch(state.epoch, opts.steps_per_epoch, state.step_in_epoch, opts.epochs,
                        step_offset=state.schedule_offset)
    loss_sum = torch.zeros((), device=device)
    epoch_steps = 0
    micro, data_time, clips = 0, 0.0, 0
    it = iter(loader)
    t_step = time.perf_counter()
    while state.step_in_epoch < opts.steps_per_epoch:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        data_time += time.perf_counter() - t0
        video = batch["video"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        if opts.amp_dtype is None:
            video = video.float()
        target = labels
        if mixup is not None:
            # Keyed by the run's micro-batch counter, so a resumed run draws the same mixes.
            video, target, _ = mixup(video, labels, step=state.global_step * acc + micro)
        last_micro = micro == acc - 1
        sync = model.no_sync() if (ctx.distributed and not last_micro and hasattr(model, "no_sync")) \
            else contextlib.nullcontext()
        with sync:
            with amp():
                logits = model(video)
            loss = criterion(logits.float(), target)
            scaled = loss / acc  # mean over the step's micro-batches
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        loss_sum += loss.detach()
        clips += video.shape[0]
        micro += 1
        if not last_micro:
            continue

        # ---- optimizer step ----
        # One all-reduce of (loss, non-finite flag): the logged loss is the mean over all ranks' clips, and since
        # gradients are all-reduced (a NaN on one rank poisons every rank) all ranks agree to stop or skip.
        local = loss_sum / acc
        finite = torch.isfinite(local)
        if scaler is None:
            # bf16 / fp32: a NaN gradient under a finite loss (an attention kernel's backward) would reach the
            # weights. The gradients are all-reduced already, so every rank sees the same.
            finite &= torch.isfinite(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
            overflow = torch.zeros_like(local)
        else:
            # fp16: the scaler's own inf/NaN check (which scaler.step() would make), made now so that its verdict
            # rides in the all-reduce below: every rank knows whether the update is skipped (no EMA update, no
            # loss, counted) without another host sync. Clipping needs unscaled gradients anyway.
            scaler.unscale_(optimizer)
            found = scaler._found_inf_per_device(optimizer).values()
            overflow = sum((f.to(device) for f in found), torch.zeros_like(local))
        packed = torch.stack([torch.where(finite, local, torch.zeros_like(local)), (~finite).float(), overflow])
        # The stop/save agreement rides in the same collective (no second sync after the step), and so does each
        # rank's loader wait, in a slot of its own: the sum gives every rank all of them, and the logged wait is
        # the slowest rank's (a rank whose loader lags holds the others in the all-reduce, which is not their wait).
        flags = control.local_flags() if control is not None else []
        waits = [0.0] * ctx.world_size if ctx.world_size > 1 else []
        if waits:
            waits[ctx.rank] = data_time
        if flags or waits:
            host = torch.tensor([float(v) for v in flags] + waits)
            if packed.is_cuda:  # from pageable memory the copy would wait for the backward first
                host = host.pin_memory()
            packed = torch.cat([packed, host.to(packed.device, non_blocking=True)])
        # host sync, once per step
        loss_total, n_bad, n_overflow, *rest = dist_utils.all_reduce_sum(packed, ctx).tolist()
        if control is not None:
            control.agree(rest[:len(flags)])
        slowest_wait = max(rest[len(flags):], default=data_time)
        # A step the loss scaler skips (inf/NaN in the fp16-scaled gradients under a finite loss: its scale is
        # lowered) is a step without an update, as a skipped non-finite loss is, but no error.
        skipped = n_bad > 0 or n_overflow > 0
        step_loss = float("nan") if skipped else loss_total / ctx.world_size
        if skipped:
            if n_bad > 0 and not opts.skip_nonfinite:
                raise NonFiniteLossError(state.global_step + 1, state.epoch, local.item(), state.last_checkpoint)
            if scaler is not None:
                scaler.update()  # lowers the scale (the gradients were found non-finite)
            optimizer.zero_grad(set_to_none=True)
            state.skipped_steps += 1
        else:
            scheduler.step_update(state.global_step - state.schedule_offset)
            if opts.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(params, opts.clip_grad)  # (unscaled above with a scaler)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                # timm's step is the number of optimizer updates including this one (its train script counts
                # num_updates before the call): the first update copies the weights, later ones average with
                # EMA_DECAY. Skipped steps made no update and are not counted.
                ema.update(unwrap(model), step=state.global_step + 1 - state.skipped_steps)
            state.epoch_loss_sum += step_loss
            state.epoch_loss_steps += 1
            epoch_steps += 1
        state.global_step += 1
        state.step_in_epoch += 1
        now = time.perf_counter()
        metrics.log_step(state.global_step, state.epoch, step_loss, max(g["lr"] for g in optimizer.param_groups),
                         clips, slowest_wait, now - t_step, micro_batches=acc, skipped=skipped)
        if on_step is not None:
            on_step()
        micro, data_time, clips = 0, 0.0, 0
        loss_sum.zero_()
        t_step = time.perf_counter()
    # Finish the iterator so the loader ends its epoch cleanly (and drain a loader's leftover micro-batches).
    for _ in it:
        pass
    metrics.end_epoch(state.global_step, state.epoch)
    mean = state.epoch_loss_sum / state.epoch_loss_steps if state.epoch_loss_steps else float("nan")
    return {"loss": mean, "steps": epoch_steps}


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues (``path`` and its loaded ``ckpt``), or None for both: it starts from step 0."""

    path: str | None = None
    ckpt: dict[str, Any] | None = None

    def ends_training(self, epochs: int) -> bool:
        """Whether the checkpoint closes the last of ``epochs``: a run resumed from it trains no more."""
        return bool(self.ckpt and self.ckpt.get("epoch_complete") and self.ckpt.get("epoch", -1) + 1 >= epochs)


def locate_checkpoint(path: str | None, auto: bool, checkpointer: Checkpointer, ctx: DistContext) -> ResumePoint:
    """Load ``path`` (must work) or, with ``auto``, the newest usable checkpoint of ``checkpointer``'s directory.

    Raises:
        CheckpointError: the file cannot be resumed, or the ranks found different checkpoints.
    """
    if path:
        found: tuple[str, dict] | None = (path, load_resumable(path))
    elif auto:
        found = checkpointer.find_latest()
    else:
        found = None
    # Every rank must continue the same checkpoint (a node-local OUTPUT, or a stale directory cache after a
    # requeue, could show ranks different files): DDP does not re-sync weights loaded after it was built.
    loaded = dist_utils.all_gather_objects(
        (os.path.realpath(found[0]), found[1]["global_step"]) if found is not None else None, ctx)
    if len(set(loaded)) > 1:
        raise CheckpointError(f"the processes of this run resumed from different checkpoints (path, step by "
                              f"rank: {loaded}); every node must see the same OUTPUT and --resume file")
    return ResumePoint(*found) if found is not None else ResumePoint()


def restore_data_plan(loader: Any, point: ResumePoint, ctx: DistContext, warn: Callable[[str], None]) -> None:
    """Plan ``loader``'s epochs as the run that saved ``point`` did, before the steps per epoch are counted.

    A video quarantined during that run is bad in this run's freshly built index, which would leave it out of the
    plan: fewer steps per epoch, another permutation, and a mid-epoch position that no longer fits. The checkpoint
    records every rank's quarantined videos (and the ones its plan left out), and the loader plans them as they
    were and substitutes them as that run did. Videos bad now that it does not record are named in one warning:
    the run cannot continue exactly. A checkpoint without the record (an older one) plans from the index."""
    states = (point.ckpt or {}).get("data_plan")
    if not states or not hasattr(loader, "adopt_plan_state"):
        return
    note = loader.adopt_plan_state(states, ctx.rank if len(states) == ctx.world_size else None)
    if note:
        warn(f"checkpoint {point.path}: {note}")


def largest_host_memory(ctx: DistContext) -> dict[str, float]:
    """:func:`host_memory_gb` of the rank with the most of each (every rank must call it: it gathers); {} where
    /proc is missing."""
    parts = [p for p in all_gather_objects(host_memory_gb(), ctx) if p]
    return {k: round(max(p[k] for p in parts), 3) for k in parts[0]} if parts else {}


@dataclass
class Trainer:
    """One training/evaluation run wired from explicit objects.

    ``model`` is what the loop calls (possibly DDP-wrapped and compiled); ``unwrap(model)`` is saved and evaluated
    (or ``ema.module`` when EMA is on). ``make_test_loader`` builds the final multi-view test loader on demand.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: nn.Module
    train_loader: Any
    val_loader: Any
    checkpointer: Checkpointer
    metrics: MetricLogger
    ctx: DistContext
    opts: TrainOptions
    config_yaml: str = ""
    mixup: Callable | None = None
    scaler: torch.amp.GradScaler | None = None
    ema: Any = None
    make_test_loader: Callable[[], Any] | None = None
    class_names: dict[int, str] | None = None
    test_setting: dict[str, Any] | None = None  # the final test's list, views and frames (FinalTestProgress)
    state: TrainState = field(default_factory=TrainState)
    resumed_from: str | None = None  # the checkpoint this process continued from
    trained: bool = False  # fit trained to the last epoch (a stop signal from then on finds the training saved)
    _saved_at: float | None = None  # when that checkpoint was saved (state_dict's saved_at, else its file's time)
    _loader_state: Any = None
    _control: StepControl | None = None
    _evaluating: tuple[str, str] | None = None  # see _evaluating_as
    _stop_said: bool = False  # a stop signal seen during an evaluation was said (see _say_stop_seen)

    # ---- checkpoint state -----------------------------------------------------------------------------------
    def state_dict(self, epoch_complete: bool) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, schedule, scaler, EMA, position, RNG."""
        # Every checkpoint, the epoch ones too: the videos quarantined during the run are bad in a resumed run's
        # index but were in this run's plan (restore_data_plan). One gather with the RNG states.
        plan = self.train_loader.plan_state() if hasattr(self.train_loader, "plan_state") else None
        rng, plans = zip(*dist_utils.all_gather_objects((capture_rng(), plan), self.ctx))
        loader_states = None
        if not epoch_complete and hasattr(self.train_loader, "state_dict"):
            loader_states = dist_utils.all_gather_objects(self.train_loader.state_dict(), self.ctx)
        st = asdict(self.state)
        st.pop("last_checkpoint")
        st["resumed_from"] = recorded_path(self.resumed_from)  # read back by a process in another working folder
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": self.state.epoch,
            "global_step": self.state.global_step,
            "epoch_complete": epoch_complete,
            "layout": self._layout(),
            "train_state": st,
            "loader": loader_states,
            "data_plan": list(plans) if plan is not None else None,
            "rng": list(rng),
            "world_size": self.ctx.world_size,
            "config": self.config_yaml,
            "best_metric": self.state.best_top1,
            "run_totals": self.metrics.totals_state(),  # so that a resumed run's summary covers the whole run
            # which logged evaluations its count of them holds: those logged before this moment (evaluate_finished)
            "saved_at": time.time(),
        }

    def _layout(self) -> dict[str, Any]:
        """What a saved data position and LR schedule depend on: a mid-epoch position is only valid where all of it
        is the same, the schedule where the steps per epoch are."""
        index = getattr(self.train_loader, "index", None)
        plan = getattr(self.train_loader, "plan_fingerprint", None)
        return {"world_size": self.ctx.world_size, "steps_per_epoch": self.opts.steps_per_epoch,
                "batch_size": getattr(self.train_loader, "batch_size", None),
                "accumulation_steps": self.opts.accumulation_steps,
                "listed_videos": len(index) if index is not None else None,
                # the usable videos the epochs are cut from: a position is a place in one plan only
                "plan": plan() if plan is not None else None}

    def save(self, epoch_complete: bool) -> str:
        state = self.state_dict(epoch_complete)
        path = self._written_by_rank0(lambda: self.checkpointer.save(state))
        self.state.last_checkpoint = path
        if self._control is not None:
            self._control.saved()
        self.metrics.info(f"saved checkpoint {path}")
        # A Ctrl-C from now on names this checkpoint and how to continue it (a demo's rerun would start over)
        on_interrupt(interrupted_after(path, self.opts.auto_resume))
        return path

    def _written_by_rank0(self, write: Callable[[], str]) -> str:
        """``write()`` (rank 0 writes, the others only name the file), then every rank learns whether it worked:
        nobody runs ahead (or reads) before the file is in place, and a failed write (a full disk) stops every
        rank with its message instead of leaving the others waiting in the next collective."""
        failure = None
        try:
            path = write()
        except (CheckpointError, OSError) as e:
            failure, path = e, ""
        reports = dist_utils.all_gather_objects(str(failure) if failure else None, self.ctx)
        if failure is not None:
            raise failure
        if reports[0] is not None:
            raise CheckpointError(f"rank 0 could not write a checkpoint: {reports[0]}")
        return path

    def load_state_dict(self, ckpt: dict[str, Any], path: str) -> None:
        """Restore a checkpoint written by :meth:`state_dict` (any rank count; RNG/loader per rank if equal)."""
        # What the saved data position and LR schedule were counted in; older checkpoints lack some entries.
        layout = self._layout()
        saved = {**layout, "world_size": ckpt.get("world_size"), **ckpt.get("layout", {})}
        changed = [k for k in layout if saved[k] != layout[k]]
        same_world = saved["world_size"] == self.ctx.world_size
        restore_training_objects(ckpt, path, unwrap(self.model), self.optimizer, self.scheduler,
                                 keep_new_hyperparameters=self.opts.adopt_config,
                                 keep_new_schedule=saved["steps_per_epoch"] != layout["steps_per_epoch"]
                                 or ("layout" not in ckpt and not same_world))
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.module.load_state_dict(ckpt["ema"])
        elif self.ema is not None:
            # TRAIN.EMA turned on at resume: the average starts from the resumed weights, not from the ones the
            # model had before the checkpoint was loaded (its initialisation), which it would drift from for
            # thousands of steps while every evaluation and best.pth used it.
            self.ema.module.load_state_dict(unwrap(self.model).state_dict())
            self.metrics.warn(f"checkpoint {path} holds no EMA weights (TRAIN.EMA was off): the EMA starts from "
                              f"its model weights")
        for k, v in ckpt.get("train_state", {}).items():
            if hasattr(self.state, k):
                setattr(self.state, k, v)
        self.state.last_checkpoint = path
        r = self.ctx.rank if same_world else 0
        if ckpt["epoch_complete"]:
            self.state.epoch, self.state.step_in_epoch = ckpt["epoch"] + 1, 0
            self._loader_state = None
            data = [k for k in ("listed_videos", "plan") if k in changed]
            if "world_size" in changed or "batch_size" in changed:  # the plan's digest counts both: it differs
                data = [k for k in data if k != "plan"]  # whatever the list, and the world size is warned of apart
            if data:  # nothing to restart, but the run no longer trains on what it did: say so
                diffs = ", ".join(f"{k} {saved[k]} -> {layout[k]}" for k in data)
                self.metrics.warn(f"the training data changed since checkpoint {path} ({diffs}): epoch "
                                  f"{self.state.epoch + 1} on are planned from this run's list and index")
        elif changed:
            # The saved loader position is a place in another per-rank schedule (another world size, batch size or
            # list length), which this run's schedule does not have: the interrupted epoch is trained again from
            # its first step.
            self.state.epoch, self.state.step_in_epoch = ckpt["epoch"], 0
            self._loader_state = None
            diffs = ", ".join(f"{k} {saved[k]} -> {layout[k]}" for k in changed)
            self.metrics.warn(f"checkpoint {path} was saved mid-epoch with another data layout ({diffs}): "
                              f"epoch {self.state.epoch + 1} restarts from its first step")
        else:
            loaders = ckpt.get("loader")
            if not loaders:
                raise CheckpointError(f"checkpoint {path} is mid-epoch but holds no loader position")
            self._loader_state = loaders[r]
        # The LR schedule resumes at this run's position of the epoch; the step count goes on from the checkpoint's.
        self.state.schedule_offset = self.state.global_step - (
            self.state.epoch * self.opts.steps_per_epoch + self.state.step_in_epoch)
        if ckpt.get("rng") and same_world:
            not_restored = restore_rng(ckpt["rng"][r])
            if not_restored:
                self.metrics.warn(f"resuming {path}: {not_restored}")
        elif ckpt.get("rng"):
            self.metrics.warn(f"world size changed ({ckpt.get('world_size')} -> {self.ctx.world_size}): "
                              "RNG streams are re-seeded, the run continues but not bit-exactly")
        self.metrics.restore_totals(ckpt.get("run_totals") or {}, self.state.global_step,
                                    mid_epoch=not ckpt["epoch_complete"])
        self.resumed_from = path
        self._saved_at = ckpt.get("saved_at")
        if self._saved_at is None:  # saved before checkpoints recorded it: written once, its file's time says it
            with contextlib.suppress(OSError):
                self._saved_at = os.path.getmtime(path)

    def resume(self, path: str | None, auto: bool, named: str = "", located: ResumePoint | None = None) -> bool:
        """Resume from ``path`` (must work) or, with ``auto``, from the newest usable checkpoint in the output
        directory. Returns whether a checkpoint was loaded. Never starts from scratch after a failed load.

        ``named``: the checkpoint the command names with ``--resume`` (``path``, or a later checkpoint of this run
        that continues it: ``preflight.resume_point``); it becomes the run's recorded ``origin``. ``located``: what
        :func:`locate_checkpoint` found for the same ``path`` and ``auto`` (``runner.train`` looks first, to plan
        the data as the checkpoint did); None looks now."""
        explicit = path or ""
        if located is None:
            located = locate_checkpoint(path, auto, self.checkpointer, self.ctx)
        path, ckpt = located.path, located.ckpt
        if ckpt is None:
            return False
        self.load_state_dict(ckpt, path)
        self._keep_a_later_best(path)
        named = named or explicit
        if named and (self.state.origin or {}).get("path") != os.path.realpath(named):
            self.state.origin = {"path": os.path.realpath(named), "step": self.state.global_step}
        if ckpt.get("epoch_complete") and self.state.step_in_epoch == 0:  # epochs are numbered from 1: the
            # checkpoint closes epoch N (ckpt_epoch_N.pth); "epoch N + 1" read as if it came from a later one
            self.metrics.info(f"resumed from {path}: end of epoch {self.state.epoch}, step {self.state.global_step}")
        else:
            self.metrics.info(f"resumed from {path}: epoch {self.state.epoch + 1}, step {self.state.global_step}")
        return True

    def _keep_a_later_best(self, path: str) -> None:
        """best.pth is written before the checkpoint that records its score: an attempt stopped in between leaves
        one newer than ``path``. Its weights scored what it says; kept as the best to beat, so that a rerun that
        scores lower (another layout, GPU nondeterminism) does not leave best_top1 naming weights best.pth lost."""
        later = self.checkpointer.best_after(self.state.global_step) if self.ctx.is_main else None
        later = all_gather_objects(later, self.ctx)[0]  # every rank must agree on what an improvement is
        if later is None or later["top1"] <= self.state.best_top1:
            return
        self.state.best_top1, self.state.best_epoch = float(later["top1"]), int(later["epoch"])
        self.metrics.warn(f"best.pth (top-1 {later['top1']:.2f} % at epoch {later['epoch'] + 1}, step "
                          f"{later['global_step']}) is newer than {path}: written by the attempt that stopped, it "
                          "stays the best to beat")

    # ---- evaluation -----------------------------------------------------------------------------------------
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else unwrap(self.model)

    def run_eval(self, loader: Any, split: str, epoch: int | None, checkpoint: str | None = None,
                 **stop: Any) -> dict[str, Any]:
        """Evaluate, write predictions and per-class accuracy (rank 0), log the eval line; returns the result.
        ``checkpoint``: the file that holds the evaluated weights, loaded from it or saved to it, untrained since
        (for the eval line); ``stop``: evaluate_and_log's ``stop_requested`` and ``kept``."""
        return evaluate_and_log(self.eval_model(), loader, self.ctx, self.metrics, split=split,
                                num_classes=self.opts.num_classes,
                                class_names=self.class_names, autocast_dtype=self.opts.amp_dtype, epoch=epoch,
                                step=self.state.global_step, checkpoint=checkpoint,
                                after_batch=self._say_stop_seen if self._evaluating else None, **stop)

    @contextlib.contextmanager
    def _evaluating_as(self, during: str, then: str):
        """Inside, a stop signal is said as :meth:`_say_stop_seen` says it: it came ``during`` (the evaluation),
        and ``then`` is what the run does about it."""
        self._evaluating = (during, then)
        try:
            yield
            self._say_stop_seen()  # one that came after its last batch, while its results were written
        finally:
            self._evaluating = None

    def _say_stop_seen(self) -> None:
        """A stop signal that came during an evaluation is acted on after it: said once, after the batch it came in,
        so that the log shows it was received even when the scheduler's kill comes before the evaluation's end."""
        name = self._control.signal_name if self._control is not None else None
        if name and self._evaluating and not self._stop_said:
            self._stop_said = True
            during, then = self._evaluating
            self.metrics.info(f"stop signal {name} received during {during}: {then}")

    # ---- the run --------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train from ``state`` to the last epoch with periodic evaluation and checkpoints; final test.

        Raises:
            Preempted: SIGTERM / SIGUSR1 arrived; every rank stopped at the same step after a checkpoint.
        """
        with StepControl(self.ctx, self.opts.save_minutes) as self._control:
            return self._fit()

    def _stop_if_signalled(self, epoch_saved: bool) -> None:
        """At an epoch end (after its evaluation): stop when a stop signal arrived, saving the epoch if needed."""
        if self._control.poll()[0]:
            if not epoch_saved:
                self.save(epoch_complete=True)
            raise Preempted(self.state.global_step, self.state.last_checkpoint, self._control.signal_name,
                            self.opts.auto_resume)

    def _fit(self) -> dict[str, Any]:
        opts, st = self.opts, self.state

        def on_step() -> None:
            stop, clock_due = self._control.poll()
            periodic = clock_due or (opts.save_steps and st.global_step % opts.save_steps == 0)
            if stop:  # the pending log window (this step's line) first: the log follows what happened
                self.metrics.flush_before_stop(st.global_step, st.epoch)
            # A stop at an epoch's last step saves it as mid-epoch too: its evaluation then runs after the resume.
            if stop or (periodic and st.step_in_epoch < opts.steps_per_epoch):
                self.save(epoch_complete=False)
            if stop:
                raise Preempted(st.global_step, st.last_checkpoint, self._control.signal_name, opts.auto_resume)

        final = None
        for epoch in range(st.epoch, opts.epochs):
            st.epoch = epoch
            self.train_loader.set_epoch(epoch)
            if self._loader_state is not None:
                self.train_loader.load_state_dict(self._loader_state)
                self._loader_state = None
            else:
                st.step_in_epoch, st.epoch_loss_sum, st.epoch_loss_steps = 0, 0.0, 0
            step_before = st.global_step
            train_stats = train_one_epoch(self.model, self.train_loader, self.optimizer, self.scheduler,
                                          self.criterion, st, opts, self.metrics, self.ctx, mixup=self.mixup,
                                          scaler=self.scaler, ema=self.ema, on_step=on_step, control=self._control)
            # The mean covers the steps before a resume too (a checkpoint older than that carries none of them: the
            # count says so), and skipped steps have no loss.
            if st.epoch_loss_steps:
                counted = f" over {st.epoch_loss_steps} of its {st.step_in_epoch} steps" \
                    if st.epoch_loss_steps != st.step_in_epoch else ""
                done = f"mean loss {train_stats['loss']:.4f}{counted}"
            elif st.global_step == step_before:
                done = f"its steps were trained before this run resumed at step {st.global_step}"
            else:
                done = "every step was skipped (non-finite loss or gradients)"
            self.metrics.info(f"epoch {epoch + 1}/{opts.epochs} done: {done}")
            # Every rank gathers (loader_stats, host memory); rank 0 writes the counters, the routes' among them.
            self.metrics.log_data("train", {**loader_stats(self.train_loader, self.ctx),
                                            **largest_host_memory(self.ctx)}, epoch, st.global_step)
            last = epoch + 1 == opts.epochs
            result = None
            try:
                if last:
                    result = self._last_validation(epoch)
                elif opts.eval_freq and (epoch + 1) % opts.eval_freq == 0:
                    with self._evaluating_as(f"the validation of epoch {epoch + 1}", "finishing it, then stopping "
                                             f"with the epoch's checkpoint (exit code {PREEMPTED_EXIT_CODE})"):
                        result = self.run_eval(self.val_loader, "val", epoch)
            except Exception as failure:
                self._keep_epoch_before(failure)
                raise
            improved = result is not None and result["top1"] > st.best_top1
            if improved:
                st.best_top1, st.best_epoch = result["top1"], epoch
            # best.pth first: the epoch checkpoint records this best, so an attempt that ended between the two
            # writes would resume past an improvement that best.pth never got.
            if improved:
                best = {"model": self.eval_model().state_dict(), "epoch": epoch, "global_step": st.global_step,
                        "top1": st.best_top1, "config": self.config_yaml}
                self._written_by_rank0(lambda: self.checkpointer.save_best(best))
            if last or (epoch + 1) % opts.save_freq == 0:
                self.save(epoch_complete=True)
            if last:
                # After the last epoch's checkpoint: a final test stopped or crashed (12 views per video, the
                # longest evaluation) costs that test again on the rerun (evaluate_finished), not the epoch's training.
                final = self._final_test(epoch, result)
            else:
                self._stop_if_signalled(epoch_saved=(epoch + 1) % opts.save_freq == 0)
        self.trained = True
        return self.outcome(final)

    def _keep_epoch_before(self, failure: Exception) -> None:
        """A validation failed: write the epoch's checkpoint, which would have followed it, so that the rerun
        resumes the epoch's training instead of training it again. With several processes every rank must save:
        a validation that scores no video (a ConfigError) fails alike on every rank, and a failure inside the
        evaluation is told to every rank (:func:`every_rank_learned`); one elsewhere (the eval line's counters,
        the predictions file) may leave the others in another collective, so nothing is saved then. A failed save
        is said and the validation's error stays the one raised."""
        if self.ctx.world_size > 1 and not (isinstance(failure, ConfigError) or every_rank_learned(failure)):
            return
        try:
            self.save(epoch_complete=True)
        except Exception as e:  # the original failure (out of memory, a stuck decoder) may be why
            self.metrics.warn(f"the validation failed, and the epoch's checkpoint could not be written either: {e}")

    def _has_final_test(self) -> bool:
        return self.opts.final_test and self.make_test_loader is not None

    def _last_validation(self, epoch: int) -> dict[str, Any]:
        """After the last epoch, the validation that competes for best, as every epoch's does (the final test's
        pass when their views agree). Best is chosen among the same views only, as the original chose it: a 4x3
        test score would otherwise outrank every 1x1 validation."""
        if self._has_final_test() and self.opts.final_test_is_val:
            with self._evaluating_as("the final test", _FINISHING):
                return self.run_eval(self.make_test_loader(), "test", epoch)
        # The training is done: the epoch's checkpoint follows, then the final test unless a stop came (_final_test)
        then = (f"finishing it, then stopping with the last epoch's checkpoint before the final test (exit code "
                f"{PREEMPTED_EXIT_CODE})" if self._has_final_test() else _FINISHING)
        with self._evaluating_as("the last epoch's validation", then):
            return self.run_eval(self.val_loader, "val", epoch)

    def _final_test(self, epoch: int, validation: dict[str, Any]) -> dict[str, Any] | None:
        """The final multi-view test (None without one); ``validation`` is it when one pass served both."""
        if not self._has_final_test():
            return None
        if self.opts.final_test_is_val:
            return validation
        if self._control.poll()[0]:  # came during the last validation: a test begun now would be cut short at once
            raise StoppedAfterTraining(self._control.signal_name, self.state.last_checkpoint, self.opts.auto_resume,
                                       "before the final test: stopped after the last epoch's checkpoint")
        # The weights tested are those of the last epoch's checkpoint, written just before: its line names it
        return self._resumable_test(epoch, self.state.last_checkpoint)

    def _resumable_test(self, epoch: int, checkpoint: str | None) -> dict[str, Any]:
        """The final test, which a stop signal ends after the batch in flight: what it scored is kept
        (:class:`FinalTestProgress`), and the rerun's test forwards only the other videos."""
        loader = self.make_test_loader()
        progress = FinalTestProgress(self.metrics, self.ctx, checkpoint, self.state.global_step, self.test_setting,
                                     loader)
        kept = progress.kept()
        with self._evaluating_as("the final test", "stopping after the batch in flight, keeping the videos scored "
                                 f"so far (exit code {PREEMPTED_EXIT_CODE})"):
            try:
                result = self.run_eval(loader, "test", epoch, checkpoint, kept=kept,
                                       stop_requested=lambda: self._control.signal_name is not None)
            except EvaluationStopped as stop:
                self._say_stop_seen()  # one that came before the first batch
                raise progress.stopped(stop, self._control.signal_name, self.opts.auto_resume) from None
        progress.done()
        if self._control.poll()[0]:  # came after its last batch: its line is logged, the rerun writes the summary
            raise StoppedAfterTraining(self._control.signal_name, checkpoint or "", self.opts.auto_resume,
                                       "after the final test's last batch: its results are written", tested=True)
        return result

    def evaluate_finished(self) -> dict[str, Any]:
        """For a run resumed after its last epoch whose summary is missing (the attempt ended between its last
        checkpoint and its summary): the final test's (else the validation's) result as metrics.jsonl logged it at
        that checkpoint's step, or, when the line is gone or was never written (a final test stopped before its
        end), the evaluation again; returns what :meth:`fit` returns.
        Best stays as the checkpoint recorded it."""
        epoch, split = self.opts.epochs - 1, "test" if self._has_final_test() else "val"
        # The final test runs after the last checkpoint (one pass serving as validation too runs before it); the
        # checkpoints of runs that tested before saving count it already: the line's time says which it was.
        logged = self.metrics.recall_evaluation(self.state.global_step, split, checkpoint_time=self._saved_at)
        if all_gather_objects(logged is not None, self.ctx)[0]:  # rank 0 read the file: every rank does as it says
            self.metrics.info(f"its final {split} result at step {self.state.global_step} is in metrics.jsonl: "
                              "the summary reports it (nothing is evaluated again)")
            return self.outcome(logged if split == "test" else None)
        # the weights scored are the resumed checkpoint's, as it saved them
        if self._has_final_test():
            with StepControl(self.ctx) as self._control:  # a stop signal ends the test after a batch, kept
                return self.outcome(self._resumable_test(epoch, self.resumed_from))
        self.run_eval(self.val_loader, "val", epoch, self.resumed_from)
        return self.outcome(None)

    def outcome(self, final: dict[str, Any] | None = None) -> dict[str, Any]:
        """What :meth:`fit` returns: the best evaluation, the final test (``final``), the last checkpoint."""
        st = self.state
        return {"best_top1": st.best_top1 if st.best_epoch >= 0 else None,
                "best_epoch": st.best_epoch + 1 if st.best_epoch >= 0 else None,
                "final": final, "last_checkpoint": st.last_checkpoint, "skipped_steps": st.skipped_steps}
