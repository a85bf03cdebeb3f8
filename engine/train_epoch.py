"""The loop over one epoch's batches: micro-batches with gradient accumulation, optimizer steps, AMP, clipping, EMA
and non-finite losses. :class:`engine.train_loop.Trainer` runs it once an epoch."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from . import distributed as dist_utils
from .distributed import DistContext, unwrap
from .metrics import MetricLogger
from .preemption import StepControl

__all__ = ["TrainOptions", "TrainState", "NonFiniteLossError", "train_one_epoch"]


class NonFiniteLossError(RuntimeError):
    """The loss, or with a finite loss the gradients, became NaN/inf; the message names the step and the last good
    checkpoint."""

    def __init__(self, step: int, epoch: int, loss: float, last_checkpoint: str | None) -> None:
        self.step, self.epoch, self.loss, self.last_checkpoint = step, epoch, loss, last_checkpoint
        where = last_checkpoint or "none saved yet"
        what = f"non-finite loss ({loss})" if not math.isfinite(loss) else f"non-finite gradients (loss {loss:.4f})"
        super().__init__(f"{what} at optimizer step {step} (epoch {epoch + 1}); stopping. "
                         f"Last good checkpoint: {where}. Set TRAIN.SKIP_NONFINITE True to skip such steps.")


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
            ``opts.skip_nonfinite`` off. This and any other error out of the steps comes after the train line of
            the steps trained since the last one (:func:`_pending_steps_logged`).
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
    with _pending_steps_logged(metrics, state):  # whatever ends the epoch: an error, a Ctrl-C
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
            # One all-reduce of the step's numbers: the logged loss is the mean over all ranks' clips, and since
            # gradients are all-reduced (a NaN on one rank poisons every rank) all ranks agree to stop or skip, naming
            # one loss.
            local = loss_sum / acc
            finite, overflow = _step_verdict(local, params, optimizer, scaler)
            packed = torch.stack([torch.where(finite, local, 0.0), (~finite).float(), overflow, local])
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
            loss_total, n_bad, n_overflow, raw_total, *rest = dist_utils.all_reduce_sum(packed, ctx).tolist()
            if control is not None:
                control.agree(rest[:len(flags)])
            slowest_wait = max(rest[len(flags):], default=data_time)
            # A step the loss scaler skips (inf/NaN in the fp16-scaled gradients under a finite loss: its scale is
            # lowered) is a step without an update, as a skipped non-finite loss is, but no error; its LR is set too.
            skipped = n_bad > 0 or n_overflow > 0
            scheduler.step_update(state.global_step - state.schedule_offset)
            step_loss = float("nan") if skipped else loss_total / ctx.world_size
            if skipped:
                if n_bad > 0 and not opts.skip_nonfinite:
                    raise _nonfinite_stop(state, raw_total / ctx.world_size)
                if scaler is not None:
                    scaler.update()  # lowers the scale (the gradients were found non-finite)
                optimizer.zero_grad(set_to_none=True)
                state.skipped_steps += 1
            else:
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
        return _end_epoch(it, optimizer, metrics, state, epoch_steps, partial_window=micro > 0)


def _end_epoch(it: Iterable[dict], optimizer: torch.optim.Optimizer, metrics: MetricLogger, state: TrainState,
               epoch_steps: int, partial_window: bool) -> dict[str, float]:
    """The end of :func:`train_one_epoch` and what it returns. A loader that ran out inside a step's window
    (``partial_window``: fewer batches than the steps planned) leaves that window's gradients behind: dropped, as
    its step is not taken, instead of being added to the next epoch's first step."""
    # Finish the iterator so the loader ends its epoch cleanly (and drain a loader's leftover micro-batches).
    for _ in it:
        pass
    if partial_window:
        optimizer.zero_grad(set_to_none=True)
    metrics.end_epoch(state.global_step, state.epoch)
    mean = state.epoch_loss_sum / state.epoch_loss_steps if state.epoch_loss_steps else float("nan")
    return {"loss": mean, "steps": epoch_steps}


def _step_verdict(local: torch.Tensor, params: list[torch.Tensor], optimizer: torch.optim.Optimizer,
                  scaler: torch.amp.GradScaler | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(whether the step's loss ``local`` and, without a loss scaler, its gradients are finite; the fp16 loss
    scaler's count of devices with non-finite gradients, 0 without it) as tensors, for the step's one all-reduce."""
    finite = torch.isfinite(local)
    if scaler is None:
        # bf16 / fp32: a NaN gradient under a finite loss (an attention kernel's backward) would reach the
        # weights. The gradients are all-reduced already, so every rank sees the same.
        finite &= torch.isfinite(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
        return finite, torch.zeros_like(local)
    # fp16: the scaler's own inf/NaN check (which scaler.step() would make), made now so that its verdict rides in
    # the step's all-reduce: every rank knows whether the update is skipped (no EMA update, no loss, counted)
    # without another host sync. Clipping needs unscaled gradients anyway.
    scaler.unscale_(optimizer)
    found = scaler._found_inf_per_device(optimizer).values()
    return finite, sum((f.to(local.device) for f in found), torch.zeros_like(local))


@contextlib.contextmanager
def _pending_steps_logged(metrics: MetricLogger, state: TrainState) -> Iterator[None]:
    """Whatever leaves the epoch's steps (a non-finite loss, CUDA out of memory, the loader's DataError, a Ctrl-C),
    the train line of the steps trained since the last one is written first: up to PRINT_FREQ - 1 of them, whose
    losses may lead to the failure, were otherwise never logged. The error itself goes on as it was."""
    try:
        yield
    except BaseException:
        # A line that cannot be written (the failed GPU asked for its memory, a full disk) must not replace the error
        with contextlib.suppress(Exception):
            metrics.end_epoch(state.global_step, state.epoch)
        raise


def _nonfinite_stop(state: TrainState, loss: float) -> NonFiniteLossError:
    """The error that stops the run at the step in flight (``loss``: its mean over every rank, so that every rank
    says the same); the train line of the steps before it is :func:`_pending_steps_logged`'s."""
    return NonFiniteLossError(state.global_step + 1, state.epoch, loss, state.last_checkpoint)
