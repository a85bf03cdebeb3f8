"""The training run: epochs of :func:`engine.train_epoch.train_one_epoch`, evaluation, checkpoints, the final test.

``Trainer`` holds the objects of a run (model, optimizer, schedule, loaders, checkpointer, metrics) and knows
nothing of the config; ``runner.train`` builds it. What a checkpoint holds of it and its resume are
:class:`engine.trainer_checkpoints.TrainerCheckpoints`'.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from configs import ConfigError
from evautil.interrupt import on_interrupt

from .checkpointing import Checkpointer
from .distributed import DistContext, all_gather_objects, unwrap
from .evaluate import EvaluationStopped, evaluate_and_log, every_rank_learned
from .loader_stats import loader_stats
from .metrics import MetricLogger
from .preemption import (PREEMPTED_EXIT_CODE, Preempted, StepControl, StopNotice, StoppedAtTest,
                         interrupted_at_final_test, stop_received)
from .telemetry import host_memory_gb
from .test_progress import PROGRESS_FILE, STOP_DURING_TEST, FinalTestProgress, interrupted_test
from .train_epoch import TrainOptions, TrainState, train_one_epoch
from .trainer_checkpoints import TrainerCheckpoints

__all__ = ["Trainer"]

# A stop signal during a final test serving as the last validation too (it runs before the epoch's checkpoint)
_FINISHING = "finishing it (the training is done; nothing to resume)"


def largest_host_memory(ctx: DistContext) -> dict[str, float]:
    """:func:`host_memory_gb` of the rank with the most of each (every rank must call it: it gathers); {} where
    /proc is missing."""
    parts = [p for p in all_gather_objects(host_memory_gb(), ctx) if p]
    return {k: round(max(p[k] for p in parts), 3) for k in parts[0]} if parts else {}


@dataclass
class Trainer(TrainerCheckpoints):
    """One training/evaluation run wired from explicit objects.

    ``model`` is what the loop calls (possibly DDP-wrapped and compiled); ``unwrap(model)`` is saved and evaluated
    (or ``ema.module`` when EMA is on). ``make_test_loader`` builds the final multi-view test loader on demand.
    Its checkpoint methods (``state_dict``, ``save``, ``load_state_dict``, ``resume``) are :class:`TrainerCheckpoints`'.
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
    _stop_notice: StopNotice = field(init=False)  # says a stop signal seen during an evaluation (_evaluating_as)

    def __post_init__(self) -> None:
        self._stop_notice = StopNotice(lambda line: self.metrics.info(line))  # the metrics of the moment

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
                                after_batch=self._stop_notice, **stop)

    def _evaluating_as(self, during: str, then: str) -> contextlib.AbstractContextManager[None]:
        """Inside, a stop signal is said once, after the batch it came in (:class:`StopNotice`): it came ``during``
        (the evaluation), and ``then`` is what the run does about it."""
        return self._stop_notice.evaluating(self._control, during, then)

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
            raise StoppedAtTest(self._control.signal_name, self.state.last_checkpoint, self.opts.auto_resume,
                                "before the final test: stopped after the last epoch's checkpoint")
        # The weights tested are those of the last epoch's checkpoint, written just before: its line names it
        return self._resumable_test(epoch, self.state.last_checkpoint)

    def _resumable_test(self, epoch: int, checkpoint: str | None) -> dict[str, Any]:
        """The final test, which a stop signal ends after the batch in flight, and in a single process a Ctrl-C
        during its batches too: what it scored is kept (:class:`FinalTestProgress`), and the rerun's test forwards
        only the other videos."""
        loader = self.make_test_loader()
        progress = FinalTestProgress(self.metrics, self.ctx, checkpoint, self.state.global_step, self.test_setting,
                                     loader)
        kept = progress.kept()
        last, auto = checkpoint or "", self.opts.auto_resume
        # The training's Ctrl-C line (a checkpoint at the next step) no longer fits: no step follows
        on_interrupt(interrupted_at_final_test(last, auto, interrupted_test("the final test", PROGRESS_FILE)))
        with self._evaluating_as("the final test", STOP_DURING_TEST):
            try:
                result = self.run_eval(loader, "test", epoch, checkpoint, kept=kept,
                                       stop_requested=self._control.stop_requested, keep_on_interrupt=True)
            except EvaluationStopped as stop:
                self._stop_notice()  # one that came before the first batch
                if stop.interrupted:  # a single process's Ctrl-C: kept as a stop's, then it ends as a Ctrl-C does
                    on_interrupt(interrupted_at_final_test(last, auto, f"the final test {progress.interrupted(stop)}"))
                    raise KeyboardInterrupt from None
                raise progress.stopped(stop, self._control.signal_name, auto) from None
        progress.done()
        on_interrupt(interrupted_at_final_test(last, auto, "the run stopped after its final test, whose result "
                                               "metrics.jsonl holds", then="write the summary"))
        if self._control.poll()[0]:  # came in or after its last batch: the summary is seconds away, nothing is left
            said = stop_received(self._control.signal_name, "stop signal ")
            self.metrics.info(f"{said} after the last batch of the final test: writing its results and the summary "
                              "(nothing to resume)")
        return result

    def evaluate_finished(self) -> dict[str, Any]:
        """For a run resumed after its last epoch whose summary is missing (the attempt ended between its last
        checkpoint and its summary): the final test's (else the validation's) result as metrics.jsonl logged it at
        that checkpoint's step, or, when the line is gone or was never written (a final test stopped before its
        end), the evaluation again; returns what :meth:`fit` returns.
        Best stays as the checkpoint recorded it."""
        epoch, split = self.opts.epochs - 1, "test" if self._has_final_test() else "val"
        # The final test runs after the last checkpoint (one pass serving as validation too runs before it); the
        # checkpoints of runs that tested before saving count it already: their run totals name their last
        # evaluation (older checkpoints: the line's time against the checkpoint's saved_at says which it was).
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
