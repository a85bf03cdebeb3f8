"""The optimizer steps of a run in numbers: the window of steps the next train line of metrics.jsonl covers (one
every PRINT_FREQ steps, and one at an epoch's end), the run totals every step adds to (the summary's), and both
carried across a resume, so that a resumed run's lines cover the same steps as an uninterrupted run's. Writing the
lines is :class:`engine.metrics.MetricLogger`'s; what their numbers mean is :mod:`engine.metrics`' docstring.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["StepWindow"]


_STEADY = ("steady_clips", "steady_time_s", "steady_data_time_s")  # totals of the steady windows


class StepWindow:
    """The steps not yet in a train line, and the run totals (``totals``, every attempt's: the summary's).

    Args:
        world_size: ranks; a step's clips are this rank's, the totals' and the rates' are all ranks'.
    """

    def __init__(self, world_size: int = 1) -> None:
        self.world_size = world_size
        # A resumed run starts from the totals its checkpoint saved (restore).
        self.totals = {"steps": 0, "clips": 0, "train_time_s": 0.0, "data_time_s": 0.0, "skipped_steps": 0,
                       "steady_clips": 0, "steady_time_s": 0.0, "steady_data_time_s": 0.0}
        self._started = False  # this attempt's first window of steps (its start-up) has been taken
        self._resumed: dict[str, Any] | None = None  # see restore
        self.at_stop: tuple[dict, dict, dict] | None = None  # see before_stop
        self._reset()

    def _reset(self) -> None:
        self._w = {"steps": 0, "loss_sum": 0.0, "loss_n": 0, "clips": 0, "data": 0.0, "time": 0.0}

    @property
    def steps(self) -> int:
        """The steps in the window."""
        return self._w["steps"]

    def start_epoch(self, start_step: int) -> None:
        """A new window for an epoch with ``start_step`` steps already done: the window a mid-epoch checkpoint
        saved (:meth:`restore`) when the epoch goes on from there."""
        self._reset()
        if start_step and self._resumed:  # the epoch goes on where the checkpoint left it: so does its line
            self._w.update(self._resumed)
        self._resumed = None

    def add(self, loss: float, clips: int, data_time: float, step_time: float, skipped: bool = False) -> int:
        """Account one optimizer step (see ``MetricLogger.log_step``) in the window and the totals; returns the
        steps now in the window. A non-finite ``loss`` (a skipped step's NaN) is left out of the mean loss."""
        w = self._w
        w["steps"] += 1
        w["clips"] += clips
        w["data"] += data_time
        w["time"] += step_time
        if math.isfinite(loss):
            w["loss_sum"] += loss
            w["loss_n"] += 1
        t = self.totals
        t["steps"] += 1
        t["clips"] += clips * self.world_size
        t["train_time_s"] += step_time
        t["data_time_s"] += data_time
        t["skipped_steps"] += int(skipped)
        return w["steps"]

    def take(self) -> dict[str, Any] | None:
        """The window's numbers for its line, and a new window: ``steps``, ``time`` (seconds), ``loss`` (mean per
        clip; None when no step's was finite), ``clips_per_sec`` (all ranks), ``data_wait_pct``, ``step_time_s``.
        None when no step is pending. Every window of an attempt but its first adds to the steady totals."""
        w = self._w
        if w["steps"] == 0:
            return None
        elapsed = max(w["time"], 1e-9)
        if self._started:
            t = self.totals
            t["steady_clips"] += w["clips"] * self.world_size
            t["steady_time_s"] += w["time"]
            t["steady_data_time_s"] += w["data"]
        self._started = True
        self._reset()
        return {"steps": w["steps"], "time": w["time"],
                "loss": w["loss_sum"] / w["loss_n"] if w["loss_n"] else None,
                "clips_per_sec": w["clips"] * self.world_size / elapsed,
                "data_wait_pct": 100.0 * w["data"] / elapsed, "step_time_s": elapsed / w["steps"]}

    def before_stop(self, last_train: dict[str, Any]) -> tuple[dict, dict, dict]:
        """The pending window, the steady totals and ``last_train`` before a stop signal's line is written: kept as
        :attr:`at_stop` when the stop came inside an epoch, for the checkpoint that follows (:meth:`state`)."""
        return dict(self._w), {k: self.totals[k] for k in _STEADY}, dict(last_train)

    def state(self, last_train: dict[str, Any]) -> dict[str, Any]:
        """For a checkpoint: the steady totals (the others are ``totals`` as they are), the last train line
        ``last_train`` and the pending window; after a stop inside an epoch, all three as they were before its line."""
        # The last train line: an attempt resumed after the run's last step trains none, and its summary's
        # last_loss would be null.
        # The steps not yet in a line (a checkpoint every SAVE_STEPS or SAVE_MINUTES within a PRINT_FREQ
        # window): without them the resumed run's next line covered only its own steps, and theirs were in none.
        window, steady, last_train = self.at_stop or (self._w, {}, last_train)
        return {**steady, "last_train": dict(last_train), "window": dict(window)}

    @property
    def resumes_steps(self) -> bool:
        """Whether the restored pending window (:meth:`restore`) holds steps: the resumed run's next line covers
        them, so a line the stopped attempt wrote of them after its checkpoint's state was taken (a stop signal's,
        a crash's) covers them twice."""
        return bool(self._resumed and self._resumed.get("steps"))

    def restore(self, saved: dict[str, Any], mid_epoch: bool = False) -> None:
        """Continue from a checkpoint's totals and (``mid_epoch``) its pending window (:meth:`state`)."""
        self.totals.update({k: saved[k] for k in self.totals if k in saved})
        # Taken up by the epoch that continues from the checkpoint's position (start_epoch), not by one trained
        # again from its first step (another data layout), whose steps are logged anew.
        self._resumed = dict(saved["window"]) if mid_epoch and saved.get("window") else None
