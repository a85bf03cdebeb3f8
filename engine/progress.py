"""Progress of long work for a person watching a terminal or reading a log file: remaining-time estimates for
training (the epoch and the whole run) and a progress reporter for evaluation.

A tqdm bar is drawn only when stderr is a terminal. Under a scheduler, with output redirected to a file, a bar's
carriage-return updates make an unreadable log, so there the same progress is written as plain lines instead.
``stderr_is_terminal`` and ``format_duration`` live in :mod:`evautil.progress` (the index build uses them too).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

from configs import ConfigError
from evautil.progress import (LINE_EVERY_S, counted, format_duration, format_rate, rate_known,
                              stderr_is_terminal)

__all__ = ["stderr_is_terminal", "format_duration", "format_number", "step_line", "eval_line", "RunClock",
           "EvalProgress", "check_countable_run"]


def format_number(v: Any) -> str:
    """A value for a console line or table: 4 significant digits, scientific when tiny or huge, ``-`` for None."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4g}"
    return str(v)


# More optimizer steps than any run takes (a million a day for 2,700 years; Kinetics-700 at batch 1 for 1000
# epochs is 5.4e8), far below what a float counts exactly (2**53) and torch's int64 step counter holds.
MAX_RUN_STEPS = 10**12


def check_countable_run(epochs: int, steps_per_epoch: int) -> None:
    """Raise ConfigError when the run's optimizer steps are more than :data:`MAX_RUN_STEPS`: a typo's TRAIN.EPOCHS
    (10**20) started and logged a remaining time of trillions of days; one of 400 digits overflowed that estimate
    (:meth:`RunClock.eta`) at the first logged step, after the model and the data were set up."""
    if epochs * steps_per_epoch <= MAX_RUN_STEPS:
        return
    digits = len(str(epochs))
    shown = f"(a number of {digits} digits)" if digits > 24 else str(epochs)
    raise ConfigError(f"TRAIN.EPOCHS {shown} x {steps_per_epoch} optimizer steps per epoch is more than 10**12 "
                      "steps, more than any run takes (a million a day for 2,700 years): set TRAIN.EPOCHS to the "
                      "epochs to train (the recipes use 1 to 40)")


class RunClock:
    """Remaining time of the epoch and of the run's training steps, from the mean optimizer-step time so far.

    Only the steps of this process count (a resumed run does not reuse the old run's speed), and the first window
    of steps is left out once later ones exist, since it carries the start-up (loader warm-up, compilation).
    Evaluations are not in the estimate: their own progress has its own estimate.
    """

    def __init__(self) -> None:
        self.steps_per_epoch = 0
        self.total_steps = 0
        self._time = 0.0
        self._steps = 0
        self._first: tuple[float, int] | None = None

    def plan(self, steps_per_epoch: int, epochs: int | None, step_offset: int = 0) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * epochs + step_offset if epochs else 0

    def add(self, seconds: float, steps: int) -> None:
        """Account a window of ``steps`` optimizer steps that took ``seconds`` in all."""
        if self._first is None:
            self._first = (seconds, steps)
        else:
            self._time += seconds
            self._steps += steps

    def step_time(self) -> float | None:
        """Mean seconds per optimizer step (None before the first window)."""
        if self._steps:
            return self._time / self._steps
        if self._first and self._first[1]:
            return self._first[0] / self._first[1]
        return None

    def eta(self, step_in_epoch: int, global_step: int) -> tuple[float | None, float | None]:
        """Seconds left in the epoch and in the run's training steps (None when unknown)."""
        per_step = self.step_time()
        if per_step is None:
            return None, None
        epoch_left = max(self.steps_per_epoch - step_in_epoch, 0) * per_step if self.steps_per_epoch else None
        run_left = max(self.total_steps - global_step, 0) * per_step if self.total_steps else None
        return epoch_left, run_left


class EvalProgress:
    """Progress of one evaluation: call it with the number of videos of each finished batch.

    On a terminal it draws a bar (with its ETA); otherwise it writes ``eval <split> batch i/N (p%), videos/s,
    eta`` through ``write`` every ``every`` batches, but at most one line every ``every_s`` seconds (a one-GPU
    evaluation of Kinetics-400 is about 10,000 batches: a line every 10 of them flooded the log), and always the
    first of those lines and the last batch's. ``enabled`` False (ranks other than 0) makes it do nothing.
    """

    def __init__(self, split: str, total_batches: int | None, write: Callable[[str], None], every: int = 10,
                 enabled: bool = True, bar: bool | None = None, every_s: float = LINE_EVERY_S) -> None:
        self.split, self.total, self.write = split, total_batches or None, write
        self.every, self.every_s = max(1, every), every_s
        self.enabled = enabled
        self.batches = self.videos = 0
        self._start = time.perf_counter()
        self._written: float | None = None  # when the last plain line was written
        self._bar = None
        if enabled and (stderr_is_terminal() if bar is None else bar):
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=f"eval {split}", unit="batch", dynamic_ncols=True, leave=False,
                             file=sys.stderr, mininterval=1.0)

    def __call__(self, videos: int) -> None:
        if not self.enabled:
            return
        self.batches += 1
        self.videos += videos
        if self._bar is not None:
            self._bar.update(1)
            return
        last = self.batches == self.total
        if self.batches % self.every and not last:
            return
        now = time.perf_counter()
        if last or self._written is None or now - self._written >= self.every_s:
            self._written = now
            self.write(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The plain progress line for the batches done so far."""
        elapsed = (time.perf_counter() if now is None else now) - self._start
        rate = format_rate(self.videos, elapsed, "video")
        if self.total:
            left = 0.0 if self.batches >= self.total else (  # none from a rate too early to mean anything
                (self.total - self.batches) * elapsed / self.batches if rate_known(self.videos, elapsed) else None)
            return (f"eval {self.split} batch {self.batches}/{self.total} ({100.0 * self.batches / self.total:.0f}%)"
                    f"  {rate}  eta {format_duration(left)}")
        return f"eval {self.split} batch {self.batches}  {rate}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _device_memory(line: dict[str, Any]) -> str:
    """The GPU's memory in use (NVML), which torch's ``max_mem_gb`` leaves out DALI's share of; empty without it."""
    used = line.get("gpu_mem_used_gb")
    return f" (device {used:.1f} GiB)" if used is not None else ""


def step_line(line: dict[str, Any], epochs: int | None, step_in_epoch: int, clock: RunClock) -> str:
    """The plain training line of the log from a metrics.jsonl train record: what the original printed (epoch,
    step, loss, lr, memory, remaining time) plus clips/s and the data wait."""
    of_epochs = f"/{epochs}" if epochs else ""
    of_epoch = f"/{clock.steps_per_epoch}" if clock.steps_per_epoch else ""
    of_run = f"/{clock.total_steps}" if clock.total_steps else ""
    return (f"epoch {line['epoch']}{of_epochs} [{step_in_epoch}{of_epoch}] step {line['step']}{of_run}  "
            f"loss {format_number(line['loss'])}  lr {format_number(line['lr'])}  "
            f"{line['clips_per_sec']:.1f} clips/s  data wait {line['data_wait_pct']:.0f}%  "
            f"mem {line['max_mem_gb']:.2f} GiB{_device_memory(line)}  "
            f"eta {format_duration(line['eta_epoch_s'])} (epoch) {format_duration(line['eta_run_s'])} (run)")


def eval_line(line: dict[str, Any]) -> str:
    """The log's line of a metrics.jsonl eval record: the split, the weights scored, the views per video, the
    accuracies and the speed."""
    mean_class = line.get("mean_class_top1")
    videos = line.get("num_videos")  # None (or absent) from an evaluation that does not count them
    views, videos = counted(line["views"], "view"), "" if videos is None else f", {counted(videos, 'video')}"
    clips, crops = line["num_clip"], line["num_crop"]
    if clips is not None and crops is not None:
        views = f"{counted(clips, 'clip')} x {counted(crops, 'crop')} = {views}"
    # The file's name only: the line in metrics.jsonl holds its path
    scored = f" of {os.path.basename(line['checkpoint'])}" if line["checkpoint"] else ""
    top5 = line["top5"]
    return (f"eval {line['split']}{scored} ({views}/video{videos}): "
            f"top-1 {line['top1']:.2f}%  "
            + (f"top-5 {top5:.2f}%  " if top5 is not None else "top-5 n/a (5 classes or fewer)  ")
            + (f"mean class top-1 {mean_class:.2f}%  " if mean_class is not None else "") + f"({_speed(line)})")


def _speed(line: dict[str, Any]) -> str:
    """The eval line's speed: videos/s and the loader's start, of the videos this evaluation decoded. A rerun of a
    stopped test says how many it took from that test (its rate counts only the others); one that took them all
    decoded nothing, and its "0.0 videos/s, 0.00 s of 0.00 s before the first batch" read as a stalled loader.
    Without ``num_videos`` (None or absent) the videos decoded are not known: the rate is said without them."""
    kept = line.get("kept") or 0
    videos = line.get("num_videos")
    decoded = None if videos is None else videos - kept
    if kept and decoded is not None and decoded <= 0:
        return f"{'the' if kept == 1 else 'all'} {counted(kept, 'video')} kept from the stopped test: nothing decoded"
    rate = f"{line.get('videos_per_sec', 0.0):.1f} videos/s"
    if kept:
        rate += (f" over the {counted(decoded, 'video')} decoded," if decoded is not None else ",") + \
            f" {kept:,} kept from the stopped test"
    if line.get("startup_s") is not None and line.get("time_s"):
        rate += f", {line['startup_s']:.2f} s of {line['time_s']:.2f} s before the first batch"
    return rate
