"""Stopping for preemption and saving on a clock, decided by all ranks together at optimizer-step boundaries.

Cluster schedulers warn a job before they kill it: SLURM sends SIGTERM when it preempts a job (then SIGKILL after
its grace time) and, with ``--signal=USR1@N``, SIGUSR1 N seconds before the time limit. A signal reaches the
ranks at different moments (or only some of them), and a rank that stopped on its own would leave the others
waiting forever in the next collective. So the handler only sets a flag; every optimizer step's loss all-reduce
also sums the ranks' flags, and when any rank was signalled every rank writes the same step checkpoint after that
step and raises :class:`Preempted`. ``train.py`` turns that into exit code :data:`PREEMPTED_EXIT_CODE`.

The same all-reduce carries "SAVE_MINUTES have passed since the last checkpoint", so the clock-based checkpoint is
also taken at one step by every rank, even though each rank reads its own clock.

Outside the training steps (indexing the lists, building the loaders and the model, loading a checkpoint,
evaluating a finished run, writing the summary) there is no step to finish and no checkpoint to write:
:func:`stop_signals_raise` turns the first stop signal into :class:`StoppedOutsideTraining`, raised where the main
thread is (an index build saves what it probed), and ignores the ones after it, so that they cannot cut that
saving short. The run exits with the same code 4 (so does a stop signal while ``train.py`` starts, before this
module is imported: see ``evautil.interrupt``). Once the run's summary is written (:func:`run_complete`), the run
is complete: a stop signal then changes nothing, and what remains (plots, closing the loaders) finishes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any, Callable

import torch

from evautil import interrupt
from evautil.interrupt import STOP_SIGNALS, STOPPED_EXIT_STATUS, Stopped

from . import distributed as dist_utils
from .distributed import DistContext

__all__ = ["PREEMPTED_EXIT_CODE", "STOP_SIGNALS", "Preempted", "StepControl", "StopNotice", "StoppedAtTest",
           "StoppedOutsideTraining",
           "how_to_resume", "interrupted_after", "interrupted_at_final_test", "run_complete",
           "stop_received", "stop_signals_raise"]

# Exit code of a run that stopped on SIGTERM / SIGUSR1 after writing its checkpoint: resumable, not a failure
# (2: fix the input, 3: non-finite loss; 143 would be a process killed by SIGTERM before it could save).
# The same as a tool's that a stop signal ended after saving its work (evautil.interrupt).
PREEMPTED_EXIT_CODE = STOPPED_EXIT_STATUS
_complete = False  # the run's summary is written (see run_complete)


class Preempted(Exception):
    """The run stopped at an optimizer step on a stop signal; ``checkpoint`` continues it."""

    def __init__(self, step: int, checkpoint: str | None, signal_name: str | None,
                 auto_resume: bool = True) -> None:
        self.step, self.checkpoint, self.signal_name = step, checkpoint, signal_name
        why = stop_received(signal_name)
        super().__init__(f"{why}: stopped after optimizer step {step} with checkpoint {checkpoint}; "
                         f"exit code {PREEMPTED_EXIT_CODE}. {how_to_resume(checkpoint, auto_resume)}")


class StoppedAtTest(Preempted):
    """A stop signal, agreed by every rank, at a run's test, so that nothing trains any more: the final test of a
    training (``trained``), after its last checkpoint, before that test or during it (``what`` says what was kept
    of it), whose same command tests the rest and writes the summary; or (not ``trained``) during the test of an
    evaluation-only run (``checkpoint``: the weights it scores), whose same command scores the rest, whatever
    TRAIN.AUTO_RESUME. A stop during or after a test's last batch is none: the test is complete, the run writes its
    results. Named apart from ``evaluate.EvaluationStopped``, which one evaluation raises on every rank and the run
    turns into this."""

    def __init__(self, signal_name: str | None, checkpoint: str, auto_resume: bool, what: str,
                 trained: bool = True) -> None:
        self.step, self.checkpoint, self.signal_name = None, checkpoint, signal_name
        why = stop_received(signal_name)
        goes_on = _goes_on(checkpoint, auto_resume, "test the rest and write the summary")
        state = (f"The training is finished (last checkpoint {checkpoint}); its final test is not complete, its "
                 f"summary.json not written yet. {goes_on}" if trained else
                 "Its results and summary.json are not written yet. Run the same command again to score the rest "
                 "and write them")
        Exception.__init__(self, f"{why} {what}; exit code {PREEMPTED_EXIT_CODE}. {state}")


def stop_received(signal_name: str | None, named: str = "") -> str:
    """Who received the stop that every process agreed on: this one (``named`` and ``signal_name``, e.g. "stop
    signal SIGTERM received"), or, without a name, another one (a signal may reach only some of the processes)."""
    return f"{named}{signal_name} received" if signal_name else "another process received a stop signal"


def _goes_on(checkpoint: str | None, auto_resume: bool, what: str) -> str:
    """What does ``what`` for a run whose last checkpoint is ``checkpoint``: the same command, or (TRAIN.AUTO_RESUME
    False: it would start over) the --resume that names it."""
    return (f"Run the same command again to {what}" if auto_resume else
            f"To {what}, run the command with --resume {checkpoint} (TRAIN.AUTO_RESUME is False: the same "
            "command would start over)")


def interrupted_at_final_test(checkpoint: str, auto_resume: bool, what: str,
                              then: str = "test the rest and write the summary") -> str:
    """A Ctrl-C's line at a training's final test, after its last checkpoint ``checkpoint``: ``what`` it did to
    the test, and what ``then`` does (the same command, or the --resume that names it)."""
    return (f"{what}. The training is finished (last checkpoint {checkpoint}); its summary.json is not written yet. "
            f"{_goes_on(checkpoint, auto_resume, then)}")


def how_to_resume(checkpoint: str | None, auto_resume: bool) -> str:
    """What continues a run from ``checkpoint``: without TRAIN.AUTO_RESUME the same command starts over from step 0
    (its --resume file, if any), moving the checkpoint aside, so the line names the --resume that continues it."""
    return _goes_on(checkpoint, auto_resume, "resume")


def interrupted_after(checkpoint: str, auto_resume: bool) -> str:
    """A Ctrl-C's line once the run has saved ``checkpoint``: what it keeps and how to go on from there."""
    return (f"the run stopped where it was, without a checkpoint after {checkpoint} (SIGTERM or SIGUSR1 instead "
            f"stop at the next step with a checkpoint, exit code {PREEMPTED_EXIT_CODE}). "
            f"{how_to_resume(checkpoint, auto_resume)}")


class StoppedOutsideTraining(Stopped):
    """A stop signal outside the training steps. A BaseException, as KeyboardInterrupt: a handler of per-video
    errors (``except Exception``) must not take it for a bad video."""

    def __init__(self, signal_name: str, message: str | None = None) -> None:
        super().__init__(signal_name, message or f"{signal_name} received outside the training steps (start-up, a "
                                                 "checkpoint's load, an evaluation-only run or the summary); exit code "
                                                 f"{PREEMPTED_EXIT_CODE}. Run the same command again (an index build "
                                                 "goes on from what it saved)")

    def after_training(self, checkpoint: str, auto_resume: bool) -> StoppedOutsideTraining:
        """This stop, in a run whose training is finished and saved in ``checkpoint`` (its last epoch's) but whose
        summary is not written yet: its line says so, and names the --resume that writes the summary when the same
        command would start over instead (TRAIN.AUTO_RESUME False)."""
        goes_on = _goes_on(checkpoint, auto_resume, "write it")
        return StoppedOutsideTraining(self.signal_name, (
            f"{self.signal_name} received after the training's last checkpoint {checkpoint}; exit code "
            f"{PREEMPTED_EXIT_CODE}. The training is finished; its summary.json is not written yet. {goes_on}"))


@contextlib.contextmanager
def stop_signals_raise():
    """Within the block the first stop signal raises :class:`StoppedOutsideTraining` in the main thread, and the
    ones after it are ignored (elsewhere, e.g. a notebook worker thread, signals keep their default action). A
    :class:`StepControl` inside the block takes the signals over while it trains. The previous handlers come back
    after the block."""
    global _complete
    if threading.current_thread() is threading.main_thread():
        _complete = False
    # Ignored once the summary is written: nothing to stop, and exiting 4 would ask for the run to be run again.
    with interrupt.stop_signals_raise(StoppedOutsideTraining, ignored=lambda: _complete):
        yield


def run_complete() -> None:
    """The run's summary is written: inside :func:`stop_signals_raise` a stop signal no longer stops the process,
    so that the plots and the closing that remain finish and the run exits with its own status (0), not as a run to
    resume."""
    global _complete
    _complete = True


class StepControl:
    """Catches the stop signals and keeps the save clock; :meth:`poll` is the per-step agreement.

    Use as a context manager around training: the previous signal handlers come back on exit. Handlers can only be
    installed from the main thread; elsewhere (e.g. a notebook worker thread) signals keep their default action.
    """

    def __init__(self, ctx: DistContext, save_minutes: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.save_seconds = save_minutes * 60.0
        self.clock = clock
        self.signal_name: str | None = None
        self._last_save = clock()
        self._previous: dict[int, Any] = {}
        self._agreed: tuple[bool, bool] | None = None

    def __enter__(self) -> "StepControl":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only a flag: the step in flight finishes, and nothing here may block or allocate much. The first signal
        # names the stop: SLURM's SIGTERM at the time limit may follow its SIGUSR1 while the checkpoint is written.
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name

    def stop_requested(self) -> bool:
        """Whether this process received a stop signal (its own flag: no collective); an evaluation asks it before
        every batch and tells the other ranks in the gather that ends it."""
        return self.signal_name is not None

    def saved(self) -> None:
        """A checkpoint was just written: the save clock starts again."""
        self._last_save = self.clock()

    def local_flags(self) -> list[float]:
        """This rank's (stop, checkpoint due) as numbers, for a caller that all-reduces them with its own values
        and hands the sums to :meth:`agree` (the training step does, with its loss: one collective, one host sync
        per step instead of two)."""
        due = self.save_seconds > 0 and self.clock() - self._last_save >= self.save_seconds
        return [float(self.stop_requested()), float(due)]

    def agree(self, summed: list[float]) -> None:
        """The all-reduced :meth:`local_flags`: the next :meth:`poll` returns them without a collective."""
        self._agreed = (summed[0] > 0, summed[1] > 0)

    def poll(self) -> tuple[bool, bool]:
        """(stop now, clock-based checkpoint due), the same on every rank. Every rank must call it at the same
        step (it all-reduces, unless :meth:`agree` gave this step's answer; a host sync, once per optimizer step)."""
        if self._agreed is not None:
            agreed, self._agreed = self._agreed, None
            return agreed
        flags = self.local_flags()
        if self.ctx.distributed:
            flags = dist_utils.all_reduce_sum(torch.tensor(flags, device=self.ctx.device), self.ctx).tolist()
        return flags[0] > 0, flags[1] > 0


class StopNotice:
    """Says a stop signal that came during an evaluation once, after the batch it came in (the evaluation acts on
    it only after that batch, or after its end), so that the log shows it was received even when the scheduler's
    kill comes before the evaluation's end. Called, it is the evaluation's ``after_batch``; outside
    :meth:`evaluating` it says nothing. Once means once for the notice: a trainer's serves all its evaluations."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say  # a log's info
        self.said = False
        self._evaluating: tuple[StepControl | None, str, str] | None = None

    @contextlib.contextmanager
    def evaluating(self, control: StepControl | None, during: str, then: str):
        """Inside, a stop signal that ``control`` caught is said: it came ``during`` (the evaluation), and ``then``
        is what the run does about it. Leaving without an error says one that came after the last batch, while the
        results were written."""
        self._evaluating = (control, during, then)
        try:
            yield
            self()
        finally:
            self._evaluating = None

    def __call__(self) -> None:
        if self._evaluating is None or self.said:
            return
        control, during, then = self._evaluating
        name = control.signal_name if control is not None else None
        if name:
            self.said = True
            self.say(f"stop signal {name} received during {during}: {then}")
