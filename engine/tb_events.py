"""OUTPUT/tensorboard/, the run's TensorBoard events (rank 0): which numbers of the train and eval lines are shown,
by optimizer step, and on a resume the points the stopped attempt wrote after its checkpoint hidden. Without a
working ``tensorboard`` package the run goes on without them and says so once. The lines themselves are
:class:`engine.metrics.MetricLogger`'s.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["TensorBoardEvents"]

# The numbers of a train line shown (as train/<key>), and those of an eval line (as <split>/<key>).
TRAIN_SCALARS = ("loss", "lr", "clips_per_sec", "data_wait_pct", "step_time_s", "max_mem_gb", "gpu_mem_used_gb",
                 "mfu", "gpu_util", "nvdec_util")
EVAL_SCALARS = ("top1", "top5", "mean_class_top1")


class TensorBoardEvents:
    """The events file of ``log_dir`` (None: none, as on the ranks other than 0 or with ``LOG.TENSORBOARD`` off);
    ``warn`` says once why TensorBoard could not be opened."""

    def __init__(self, log_dir: str | None, warn: Callable[[str], None]) -> None:
        self._writer: Any = None
        if log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._new_writer = SummaryWriter
            self._writer = SummaryWriter(log_dir)
        except Exception as e:  # tensorboard missing or broken: keep training, say so once, with the way out
            missing = isinstance(e, ImportError)
            warn(f"TensorBoard disabled, no events in {log_dir}: {e if missing else f'{type(e).__name__}: {e}'}; "
                 + ("install the tensorboard package (pip install tensorboard), or set LOG.TENSORBOARD False; "
                    if missing else "set LOG.TENSORBOARD False to go without; ")
                 + "metrics.jsonl holds the same numbers")

    def add_train(self, line: dict[str, Any], step: int) -> None:
        """The train line's numbers that are not null, at ``step``."""
        if self._writer is not None:
            for k in TRAIN_SCALARS:
                if line[k] is not None:
                    self._writer.add_scalar(f"train/{k}", line[k], step)

    def add_eval(self, result: dict[str, Any], step: int) -> None:
        """An evaluation's accuracies that are not null, under its split, at ``step``."""
        if self._writer is not None:
            for k in EVAL_SCALARS:
                if result.get(k) is not None:
                    self._writer.add_scalar(f"{result['split']}/{k}", result[k], step)

    def hide_after(self, step: int) -> None:
        """Hide the events after optimizer ``step`` (the stopped attempt's file keeps them), where they were shown
        beside the resumed run's, two points at each step."""
        if self._writer is not None:
            log_dir = self._writer.get_logdir()
            self._writer.close()
            self._writer = self._new_writer(log_dir, purge_step=step + 1)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
