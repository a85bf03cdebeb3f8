"""Every number a run reports goes through :class:`MetricLogger`: console lines (rank 0), per-rank log files,
OUTPUT/metrics.jsonl, TensorBoard, a tqdm progress bar (on a terminal only), the dry-run plan and the end-of-run
summary. Its parts, a job each: :mod:`engine.telemetry` (the device's peak, NVML sampling, memory),
:mod:`engine.step_window` (the steps of the next train line and the run totals, across a resume too),
:mod:`engine.tb_events` (TensorBoard's events), :mod:`engine.metrics_file` (metrics.jsonl as a file, and reading it
back), :mod:`engine.run_log` (the log files' stamps and the ``logging`` records a run takes in) and
:mod:`engine.run_summary` (summary.json's fields and table).

Nothing else in the project prints. Every PRINT_FREQ optimizer steps a plain step line (epoch, step, loss, lr,
clips/s, data wait, memory, remaining time) goes to the log file, whether or not a bar is drawn; on the console it
is printed only when there is no bar. Conventions of the numbers written:

- Epochs are counted from 1 in everything a person reads: console, log files, ``ckpt_epoch_{e}.pth``,
  ``metrics.jsonl`` and ``summary.json`` (``epoch_number``). The engine's loops and the checkpoint dicts keep the
  0-based index, as the original's checkpoints did.

- ``loss`` is the true mean loss per clip over the logged steps (the original logged ``loss / ACC``, which made
  runs with different accumulation incomparable).
- ``clips_per_sec`` / ``frames_per_sec`` are global (all ranks); ``step_time_s`` is wall time per optimizer step
  including the time spent waiting for the loader; ``data_wait_pct`` is that wait's share of the step time, the
  wait of the rank that waited longest at each step (``train_epoch`` gathers them in the step's all-reduce).
- ``mfu`` = achieved model FLOP/s per device (3x the forward FLOPs per trained clip: forward + backward, not
  counting recomputation) over the device's dense peak for the run's precision (bf16/fp16 tensor cores; for fp32,
  plain fp32 unless torch was set to use TF32); null when the peak is unknown (e.g. a CPU).
- ``max_mem_gb``: peak CUDA memory allocated by torch's tensors, or the process's peak RSS on the CPU (GiB).
  ``gpu_mem_used_gb``: the device's memory in use (NVML: every allocation, DALI's decoders and buffers too, and
  any other process's) at its highest in the window; null without NVML.
- ``gpu_util`` / ``nvdec_util``: mean NVML utilisation (%) over the logged window of training steps (an eval line:
  over that evaluation); null without NVML. Start-up, evaluations and checkpoint writes are not in a train line's.
- ``summary.json``: ``mean_clips_per_sec`` / ``mean_data_wait_pct`` over every step trained, start-up included;
  ``steady_clips_per_sec`` / ``steady_data_wait_pct`` leave out the first window of steps of each attempt (the
  loader's start, CUDA's and compilation's warm-up), null until a second window exists.
- ``kind: "data"`` lines, one after every training epoch: the training loader's counters summed over ranks and
  counted since the loader was built (this process): videos and samples per decode route (``videos_<route>``,
  ``samples_<route>``: a training clip, or a test video with all its views), ``route_fallbacks``,
  ``skipped_videos``, ``substituted``, ``rebuilds``, ... (evaluation lines carry the same counters of their own
  loader), and the host memory resident at the epoch's end
  (``host_rss_gb``, ``workers_rss_gb``: :func:`engine.telemetry.host_memory_gb`, of the rank with the most).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Callable, Iterator

import torch

from evautil.files import atomic_write_text, make_output_folder, naming_the_file
from evautil.flops import train_step_flops
from evautil.interrupt import interrupted_line

from .metrics_file import drop_lines_after_step, open_lines, recall_lines, recalled_counters, write_line
from .progress import EvalProgress, RunClock, eval_line, format_duration, step_line, stderr_is_terminal
from .progress import format_number as _fmt
from .run_files import standard_json
from .run_log import follow, let_go, log_stopped, stamped
from .run_summary import summary_fields, summary_table
from .step_window import StepWindow
from .tb_events import TensorBoardEvents
from .telemetry import NvmlSampler, device_peak_flops, max_mem_gb

__all__ = ["MetricLogger", "print_plan", "epoch_number", "STEP_KEYS", "EVAL_KEYS"]


# Keys present in every training / evaluation line of metrics.jsonl (value null when not measurable).
STEP_KEYS = ("kind", "step", "epoch", "loss", "lr", "clips_per_sec", "frames_per_sec", "data_wait_pct",
             "step_time_s", "max_mem_gb", "gpu_mem_used_gb", "mfu", "gpu_util", "nvdec_util", "eta_epoch_s",
             "eta_run_s")
EVAL_KEYS = ("kind", "split", "top1", "top5", "mean_class_top1", "num_videos", "views", "num_clip", "num_crop",
             "checkpoint", "epoch", "step", "gpu_util", "nvdec_util")


def epoch_number(epoch_index: int) -> int:
    """The epoch as a person reads it (1 = the first epoch) from the loops' 0-based index."""
    return epoch_index + 1


def print_plan(plan: dict[str, Any]) -> None:
    """The --dry-run report on stdout: one aligned ``key : value`` line each (no output directory is touched)."""
    width = max(len(k) for k in plan)
    print("Plan (dry run, nothing trained):", flush=True)
    for k, v in plan.items():
        print(f"  {k.ljust(width)} : {_fmt(v)}", flush=True)


class MetricLogger:
    """Every number the run reports goes through here.

    Args:
        output_dir: run directory (metrics.jsonl, tensorboard/, log_rank{r}.txt, summary.json).
        rank, world_size: this process; only rank 0 prints (other ranks: the warnings only they saw, see :meth:`warn`),
            writes JSONL/TensorBoard and shows the bar.
        device: compute device (memory, MFU peak, NVML index).
        print_freq: optimizer steps per training line.
        frames_per_clip: T, for frames/s.
        flops_per_clip: forward FLOPs of one clip (None: no MFU).
        tensorboard, nvml, progress_bar: switches from the LOG config node.
        precision: the run's training precision (bf16, fp16, fp32): which stated peak the MFU divides by.
    """

    def __init__(self, output_dir: str, rank: int = 0, world_size: int = 1, device: torch.device | None = None,
                 print_freq: int = 10, frames_per_clip: int = 1, flops_per_clip: float | None = None,
                 tensorboard: bool = True, nvml: bool = True, progress_bar: bool = True,
                 precision: str = "bf16") -> None:
        self.output_dir = output_dir
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.device = device or torch.device("cpu")
        self.print_freq = max(1, print_freq)
        self.frames_per_clip = frames_per_clip
        self.flops_per_clip = flops_per_clip
        self.peak_flops = device_peak_flops(self.device, precision)
        make_output_folder(output_dir, "OUTPUT =")  # (the ranks of other nodes make it here)
        # surrogateescape: a path of bytes that are no UTF-8 (a folder named on a Latin-1 system) is logged as the
        # bytes it is named with; its first line in the log ended the run
        self._log_file = open(os.path.join(output_dir, f"log_rank{rank}.txt"), "a", encoding="utf-8",
                              errors="surrogateescape")
        self._log_stopped = False  # a write to it failed (a full disk): said once, not written again (_write_log)
        self._jsonl = open_lines(os.path.join(output_dir, "metrics.jsonl")) if self.is_main else None
        self._nvml = NvmlSampler(self.device.index or 0) if (nvml and self.device.type == "cuda") else None
        self._bar = None
        # A bar only where a person watches: under a scheduler stderr is a file and the bar would garble it.
        self._progress = progress_bar and self.is_main and stderr_is_terminal()
        self.clock = RunClock()
        self._epoch_step = self._epoch_steps = 0
        self._epochs: int | None = None
        self.window = StepWindow(world_size)  # the steps of the next train line, and the run totals
        self.totals = self.window.totals  # (the same dict: restore_totals updates it in place)
        self.run_start = time.monotonic()  # (not the wall clock: one set back during the run made wall_time_s < 0)
        self._earlier = {"wall_time_s": 0.0, "evaluations": 0}  # of the attempts before a resume
        # The split and step of the last evaluation those count (None: none), for recall_evaluation; unknown from a
        # checkpoint saved before checkpoints recorded it.
        self._earlier_last: dict[str, Any] | None = None
        self._earlier_last_known = True
        self.last_train: dict[str, Any] = {}
        self.evals: list[dict[str, Any]] = []
        self._recalled_final: dict[str, Any] | None = None  # see recall_evaluation
        self._recalled_counts: dict[str, dict[str, Any]] = {}  # see recalled_counts
        self._followed: list[str] = []  # see follow_logger
        self._kept: list[str] | None = None  # see keep_warnings
        # Last: without a working tensorboard package it warns, and a warning reads the attributes above.
        self._tb = TensorBoardEvents(os.path.join(output_dir, "tensorboard") if self.is_main else None, self.warn,
                                     shown=tensorboard)

    # ---- plain messages -------------------------------------------------------------------------------------
    def info(self, msg: str) -> None:
        """A console line on rank 0 (kept clear of the progress bar) and a line in this rank's log file, the console's
        first: a log that cannot be written (a full disk) lost the console line too."""
        if self.is_main:
            self._console(msg)
        self._write_log(msg)

    def _console(self, msg: str) -> None:
        if self._bar is not None:
            self._bar.write(msg)
        else:
            print(msg, flush=True)

    def warn(self, msg: str, this_rank_only: bool = False) -> None:
        """A warning line as :meth:`info` writes it; ``this_rank_only``: one only this rank could have seen (a video
        failing in its share), which a rank other than 0 prints on the console too, naming itself."""
        if this_rank_only and not self.is_main:
            print(f"[rank {self.rank}] WARNING: {msg}", flush=True)
            self._write_log(f"WARNING: {msg}")
        else:
            self.info(f"WARNING: {msg}")
        if self._kept is not None and not this_rank_only:  # (said already, by the rank that saw it)
            self._kept.append(msg)

    @contextlib.contextmanager
    def keep_warnings(self) -> Iterator[list[str]]:
        """While inside, this rank's warnings are also kept in the list given, to be gathered from every rank for
        :meth:`say_unsaid_warnings`."""
        self._kept = kept = []
        try:
            yield kept
        finally:
            self._kept = None

    def say_unsaid_warnings(self, kept_by_rank: list[list[str]]) -> None:
        """Every rank's kept warnings (:meth:`keep_warnings`), in rank order: this rank prints on the console, naming
        itself, those no lower rank gave (rank 0 printed its own as they came), so a warning every rank gave alike
        (a bad video of a list they all index) is printed once, and one only some ranks saw (another node's own
        index cache) still is."""
        said = {msg for kept in kept_by_rank[:self.rank] for msg in kept}
        for msg in dict.fromkeys(kept_by_rank[self.rank]):
            if msg not in said and not self.is_main:
                print(f"[rank {self.rank}] WARNING: {msg}", flush=True)

    def follow_logger(self, name: str) -> None:
        """Until :meth:`close`, the INFO and WARNING records of the ``logging`` logger ``name`` (and its children,
        e.g. the data pipeline's: bad videos, quarantines, index progress) are lines of this run's log: every
        rank's log file, and rank 0's console, not every rank's stderr (a warning marked
        ``evautil.progress.THIS_RANK_ONLY`` is on the console of the rank that gave it too)."""
        follow(name, self)
        self._followed.append(name)

    def log_interrupted(self) -> None:
        """Keep a Ctrl-C's line (``evautil.interrupt``: the console gets it from the interrupt hook) in this rank's
        log file, so that the run's own record says how it ended; a log already closed is passed over (one that cannot
        be written is said once, :meth:`_write_log`)."""
        try:
            self._write_log(interrupted_line())
        except ValueError:  # a log already closed
            pass

    def report(self, msg: str) -> None:
        """A progress line: always in the log file; on the console only when no bar shows the same."""
        if self._progress:
            self._write_log(msg)
        else:
            self.info(msg)

    @property
    def log_path(self) -> str:
        """This rank's log_rank<r>.txt."""
        return self._log_file.name

    def _write_log(self, msg: str) -> None:
        """A line of this rank's log. The first write that fails (a full disk) stops the log with one warning on
        this rank's console (:func:`engine.run_log.log_stopped`): each line raised, and from a followed logger
        printed a "--- Logging error ---" traceback, record after record."""
        if self._log_stopped:
            return
        try:
            self._log_file.write(stamped(msg))
            self._log_file.flush()
        except OSError as error:  # (a ValueError, the log closed, is a bug: raised)
            self._log_stopped = True
            said = log_stopped(self._log_file.name, error)
            if self.is_main:
                self._console(f"WARNING: {said}")
            else:
                print(f"[rank {self.rank}] WARNING: {said}", flush=True)

    def write_config(self, config_yaml: str, name: str = "config.yaml") -> str:
        """Save the resolved config into the output directory (rank 0)."""
        path = os.path.join(self.output_dir, name)
        if self.is_main:
            with naming_the_file(path):  # a full disk's error from write() names no file
                atomic_write_text(path, config_yaml)
        return path

    # ---- training steps -------------------------------------------------------------------------------------
    def start_epoch(self, epoch: int, num_steps: int, start_step: int = 0, epochs: int | None = None,
                    step_offset: int = 0) -> None:
        """Open the progress bar of an epoch of ``num_steps`` optimizer steps, ``start_step`` already done;
        ``step_offset``: the run's step count minus its schedule position (``TrainState.schedule_offset``)."""
        self.window.start_epoch(start_step)
        self._utilisation()  # what was sampled before (start-up, an evaluation, a checkpoint write) is not training's
        self._epoch = epoch
        self._epoch_step, self._epochs, self._epoch_steps = start_step, epochs, num_steps
        self.clock.plan(num_steps, epochs, step_offset)
        if self._progress:
            from tqdm import tqdm

            n = epoch_number(epoch)
            desc = f"epoch {n}/{epochs}" if epochs else f"epoch {n}"
            self._bar = tqdm(total=num_steps, initial=start_step, desc=desc, dynamic_ncols=True, leave=False,
                             file=sys.stderr, mininterval=1.0)

    def log_step(self, step: int, epoch: int, loss: float, lr: float, clips: int, data_time: float,
                 step_time: float, micro_batches: int = 1, skipped: bool = False) -> dict[str, Any] | None:
        """Account one optimizer step; every ``print_freq`` steps write a line and return it.

        Args:
            step: optimizer steps completed in the run (1-based after the first step).
            loss: mean loss per clip over the step's micro-batches (not divided by ACC).
            lr: learning rate of the head group (lr_scale 1).
            clips: clips this rank trained on in the step (B x ACC).
            data_time / step_time: seconds waiting for the loader (the slowest rank's) / the whole step (loader
                wait included).
            skipped: the step's update was skipped (a non-finite loss, or gradients the fp16 loss scaler found
                non-finite); its ``loss`` is NaN.
        """
        pending = self.window.add(loss, clips, data_time, step_time, skipped)
        self._lr = lr
        self._epoch_step += 1
        if self._bar is not None:
            self._bar.update(1)
        if pending >= self.print_freq:
            return self.flush_steps(step, epoch)
        return None

    def flush_steps(self, step: int, epoch: int) -> dict[str, Any] | None:
        """Write the pending window of steps as one line (also called at the end of an epoch)."""
        if self.window.steps == 0:
            return None
        gpu, dec, mem = self._utilisation()
        w = self.window.take()
        clips_per_sec = w["clips_per_sec"]
        mfu = None
        if self.peak_flops and self.flops_per_clip:
            mfu = train_step_flops(self.flops_per_clip) * (clips_per_sec / self.world_size) / self.peak_flops
        self.clock.add(w["time"], w["steps"])
        eta_epoch, eta_run = self.clock.eta(self._epoch_step, step)
        line = {
            "kind": "train", "step": step, "epoch": epoch_number(epoch), "loss": w["loss"], "lr": self._lr,
            "clips_per_sec": clips_per_sec, "frames_per_sec": clips_per_sec * self.frames_per_clip,
            "data_wait_pct": w["data_wait_pct"], "step_time_s": w["step_time_s"],
            "max_mem_gb": max_mem_gb(self.device),
            "gpu_mem_used_gb": mem / 2**30 if mem else None,
            "mfu": mfu, "gpu_util": gpu, "nvdec_util": dec,
            "skipped_steps": self.totals["skipped_steps"],
            "eta_epoch_s": eta_epoch, "eta_run_s": eta_run,
            "time": time.time(),
        }
        self.last_train = line
        self._write(line)
        self._tb.add_train(line, step)
        if self._bar is not None:
            self._bar.set_postfix(loss=_fmt(line["loss"]), lr=_fmt(line["lr"]), clips_s=f"{clips_per_sec:.1f}",
                                  wait=f"{line['data_wait_pct']:.0f}%", run_eta=format_duration(eta_run))
        self.report(step_line(line, self._epochs, self._epoch_step, self.clock))
        return line

    def flush_before_stop(self, step: int, epoch: int) -> None:
        """Write the pending steps' line (a stop signal's step), yet let the checkpoint that follows record them as
        still pending: the resumed run's next line then covers the same steps as an uninterrupted run's (it
        restarted its window there, so every later line of the epoch came at other steps, over other steps)."""
        kept = self.window.before_stop(self.last_train)
        self.end_epoch(step, epoch)
        if self._epoch_step < self._epoch_steps:  # at the epoch's last step the line is the uninterrupted run's
            self.window.at_stop = kept

    def end_epoch(self, step: int, epoch: int) -> None:
        self.flush_steps(step, epoch)
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ---- evaluation -----------------------------------------------------------------------------------------
    def _utilisation(self) -> tuple[float | None, float | None, int | None]:
        """The NVML sampler's readings since it was last asked (:meth:`NvmlSampler.read`), which starts a new window."""
        return self._nvml.read() if self._nvml else (None, None, None)

    def eval_progress(self, split: str, total_batches: int | None) -> EvalProgress:
        """Progress of an evaluation of ``total_batches`` batches on this rank (shown by rank 0); the evaluation's
        utilisation window opens here."""
        self._utilisation()
        return EvalProgress(split, total_batches, self.report, every=self.print_freq, enabled=self.is_main,
                            bar=self._progress)

    def log_eval(self, result: dict[str, Any], epoch: int | None, step: int | None) -> dict[str, Any]:
        """Write an evaluation line (split, top1, top5, mean_class_top1, num_videos, views, num_clip, num_crop,
        checkpoint, ...: every one of ``EVAL_KEYS``, null when ``result`` lacks it) and print it.
        ``epoch`` is the 0-based index of the epoch just trained (None for an evaluation without training)."""
        number = epoch_number(epoch) if epoch is not None else None
        gpu, dec, _ = self._utilisation()
        line = {"kind": "eval", "epoch": number, "step": step, **result, "gpu_util": gpu, "nvdec_util": dec,
                "time": time.time()}
        for key in EVAL_KEYS:
            line.setdefault(key, None)
        self.evals.append(line)
        self.info(eval_line(line))  # first: a metrics.jsonl that cannot be written (a full disk) loses no accuracy
        self._write(line)
        if step is not None:
            self._tb.add_eval(result, step)
        return line

    def log_data(self, split: str, counters: dict[str, Any], epoch: int, step: int) -> dict[str, Any]:
        """Write a ``data`` line: a loader's counters (``loader_stats.loader_stats``) after epoch index ``epoch``."""
        line = {"kind": "data", "split": split, "epoch": epoch_number(epoch), "step": step, **counters,
                "time": time.time()}
        self._write(line)
        return line

    def _write(self, line: dict[str, Any]) -> None:
        if self._jsonl is not None:
            write_line(self._jsonl, line)

    def recall_evaluation(self, step: int, split: str, checkpoint_time: float | None = None) -> dict[str, Any] | None:
        """The last ``split`` eval line metrics.jsonl holds at optimizer ``step`` (rank 0 reads; None on the other
        ranks or when there is none). It becomes the summary's final result without counting as another
        evaluation (unless the checkpoint at ``step`` that this run resumed was saved before it, whose count then
        lacks it: counted once, :meth:`_counted_before`), the last train line up to ``step`` gives its
        ``last_loss``, and the loaders' counters come from the lines that logged them (:meth:`recalled_counts`): a
        finished run whose attempt ended before its summary was written is summarised from what it logged.
        ``checkpoint_time``: when that checkpoint was saved (the wall clock), read only for one saved before
        checkpoints recorded their last evaluation."""
        if not (self.is_main and self._jsonl is not None and os.path.isfile(self._jsonl.name)):
            return None
        found, last_train, counters = recall_lines(self._jsonl.name, step, split)
        if last_train is not None:
            self.last_train = last_train
        self._recalled_final = found
        self._recalled_counts = counters if found is not None else {}
        if found is not None and not self._counted_before(found, checkpoint_time):
            self._earlier["evaluations"] += 1
        return found

    def _counted_before(self, line: dict[str, Any], checkpoint_time: float | None) -> bool:
        """Whether the resumed checkpoint's count of evaluations holds the eval ``line`` of its step: the line is the
        last evaluation it counted (the same split and step; the validation before the save and the final test after
        it share the step). The lines' wall-clock times decided it, and a clock set back (NTP, a resumed virtual
        machine) between the save and the final test counted that test in no summary; a checkpoint that does not
        record its last evaluation still goes by ``checkpoint_time``."""
        if self._earlier_last_known:
            return self._earlier_last == {"split": line.get("split"), "step": line.get("step")}
        logged = line.get("time")
        return checkpoint_time is None or not isinstance(logged, (int, float)) or logged <= checkpoint_time

    def recalled_counts(self, counts: dict[str, Any]) -> dict[str, Any]:
        """``counts`` (the summary's loader counters, ``train_*``, ``val_*``, ``test_*``, as this attempt's loaders
        hold them) with the values the lines recalled by :meth:`recall_evaluation` logged: the attempt that trained
        and evaluated counted them, this one only writes its summary. A ``test_*`` counter this attempt has no loader
        for takes the name of its ``val_*`` one (the same loader counters)."""
        return recalled_counters(counts, self._recalled_counts)

    # ---- across a resume -------------------------------------------------------------------------------------
    def totals_state(self) -> dict[str, Any]:
        """The run totals so far (every attempt), the last train line and the pending steps, for a checkpoint."""
        last = ({"split": self.evals[-1]["split"], "step": self.evals[-1]["step"]} if self.evals
                else self._earlier_last)
        known = {"last_evaluation": last} if self.evals or self._earlier_last_known else {}
        return {**self.totals, "wall_time_s": self._wall_time_s(),
                "evaluations": self._earlier["evaluations"] + len(self.evals), **known,
                **self.window.state(self.last_train)}

    def restore_totals(self, saved: dict[str, Any], step: int, mid_epoch: bool = False) -> None:
        """Continue from a checkpoint's :meth:`totals_state` at optimizer step ``step``, and drop the lines the
        lost attempt wrote after that checkpoint from metrics.jsonl (the resumed run writes them again;
        ``mid_epoch``: see :func:`engine.metrics_file.drop_lines_after_step`)."""
        self.window.restore(saved, mid_epoch)
        self._earlier = {"wall_time_s": float(saved.get("wall_time_s", 0.0)),
                         "evaluations": int(saved.get("evaluations", 0))}
        self._earlier_last = saved.get("last_evaluation")
        self._earlier_last_known = "last_evaluation" in saved  # (older checkpoints lack it)
        self.last_train = dict(saved.get("last_train") or {})  # (older checkpoints lack it)
        self._tb.hide_after(step)  # TensorBoard too
        if self._jsonl is not None:
            self._jsonl, said = drop_lines_after_step(self._jsonl, step, mid_epoch, self.window.resumes_steps)
            if said:
                self.info(said)

    def _wall_time_s(self) -> float:
        return self._earlier["wall_time_s"] + time.monotonic() - self.run_start

    # ---- end of run -----------------------------------------------------------------------------------------
    def summary(self, extra: dict[str, Any], written: Callable[[], None] = lambda: None) -> dict[str, Any]:
        """Write OUTPUT/summary.json and print the end-of-run table (rank 0), calling ``written`` in between (every
        rank). Returns the summary dict."""
        recalled = self._recalled_final is not None  # summarised from its lines: the attempts up to its checkpoint
        out = summary_fields(
            self.totals, self._earlier["wall_time_s"] if recalled else self._wall_time_s(), self.last_train,
            self.last_train.get("max_mem_gb") if recalled else max_mem_gb(self.device),
            # The sampler's, over this attempt (training and evaluation): null without NVML or when recalled.
            None if recalled else self._nvml,
            self._earlier["evaluations"] + len(self.evals), self.evals[-1] if self.evals else self._recalled_final)
        out.update(extra)
        if self.is_main:  # whole or not at all: a reader (or a rerun) must never find half a summary
            path = os.path.join(self.output_dir, "summary.json")
            with naming_the_file(path):  # a full disk's error from write() names no file
                atomic_write_text(path, standard_json(out, indent=2))
        written()  # before the table: a stop signal while it is printed must not say the summary is missing
        if self.is_main:
            for line in summary_table(out, extra):
                self.info(line)
        return out

    def close(self) -> None:
        """Close every file and sink; a failing flush (a full disk, already reported) does not stop the rest."""
        for name in self._followed:
            let_go(name, self)
        self._followed = []
        for part in (self._close_sinks, self._log_file.close):
            try:
                part()
            except OSError:
                pass

    def _close_sinks(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._nvml is not None:
            self._nvml.close()
        self._tb.close()
        if self._jsonl is not None:
            jsonl, self._jsonl = self._jsonl, None
            jsonl.close()

