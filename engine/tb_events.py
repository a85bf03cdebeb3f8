"""OUTPUT/tensorboard/, the run's TensorBoard events (rank 0): which numbers of the train and eval lines are shown,
by optimizer step, and on a resume the points the stopped attempt wrote after its checkpoint hidden. Without a
working ``tensorboard`` package, or once its events cannot be written (a full disk), the run goes on without them
and says so once. The lines themselves are :class:`engine.metrics.MetricLogger`'s.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from typing import Any, Callable, Iterator

__all__ = ["TensorBoardEvents"]

# The numbers of a train line shown (as train/<key>), and those of an eval line (as <split>/<key>).
TRAIN_SCALARS = ("loss", "lr", "clips_per_sec", "data_wait_pct", "step_time_s", "max_mem_gb", "gpu_mem_used_gb",
                 "mfu", "gpu_util", "nvdec_util")
EVAL_SCALARS = ("top1", "top5", "mean_class_top1")


class TensorBoardEvents:
    """The events file of ``log_dir`` (None: none, as on the ranks other than 0); not ``shown`` (``LOG.TENSORBOARD``
    off): no events, but a resume still hides the stopped attempt's later ones there (:meth:`hide_after`). ``warn``
    says once why TensorBoard could not be opened, or why it stopped."""

    def __init__(self, log_dir: str | None, warn: Callable[[str], None], shown: bool = True) -> None:
        self._writer: Any = None
        self._log_dir = log_dir
        self._warn = warn
        self._shown = shown
        if log_dir is None or not shown:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._new_writer = SummaryWriter
            _quiet_writer_threads()
            self._writer = SummaryWriter(log_dir)
        except Exception as e:  # tensorboard missing or broken: keep training, say so once, with the way out
            if isinstance(e, ImportError):
                warn(f"TensorBoard disabled, no events in {log_dir}: {e}; install the tensorboard package (pip "
                     "install tensorboard), or set LOG.TENSORBOARD False; metrics.jsonl holds the same numbers")
            else:  # e.g. a full disk: its first events could not be written
                warn(f"TensorBoard disabled, no events in {log_dir}: {_reason(e)}; {_way_out(e)}")

    def add_train(self, line: dict[str, Any], step: int) -> None:
        """The train line's numbers that are not null, at ``step``."""
        if self._writer is not None:
            with self._stop_on_error():
                for k in TRAIN_SCALARS:
                    if line[k] is not None:
                        self._writer.add_scalar(f"train/{k}", line[k], step)

    def add_eval(self, result: dict[str, Any], step: int) -> None:
        """An evaluation's accuracies that are not null, under its split, at ``step``."""
        if self._writer is not None:
            with self._stop_on_error():
                for k in EVAL_SCALARS:
                    if result.get(k) is not None:
                        self._writer.add_scalar(f"{result['split']}/{k}", result[k], step)

    def hide_after(self, step: int) -> None:
        """Hide the events after optimizer ``step`` (the stopped attempt's file keeps them), where they were shown
        beside the resumed run's, two points at each step. Without events of its own (``LOG.TENSORBOARD`` off) as
        well, where an earlier attempt left the folder: a later run with them on showed those points again."""
        if self._writer is not None:
            with self._stop_on_error():
                self._writer.close()
                self._writer = self._new_writer(self._log_dir, purge_step=step + 1)
        elif not self._shown and self._log_dir is not None and os.path.isdir(self._log_dir):
            try:
                from torch.utils.tensorboard import SummaryWriter

                _quiet_writer_threads()
                SummaryWriter(self._log_dir, purge_step=step + 1).close()  # an events file of that mark alone
            except Exception as e:  # noqa: BLE001 - tensorboard missing, a full disk: the run goes on, said once
                how = ("install the tensorboard package (pip install tensorboard)" if isinstance(e, ImportError)
                       else "free space there" if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
                       else "check that folder")
                self._warn(f"TensorBoard's events after step {step} in {self._log_dir}, the stopped attempt's, stay "
                           f"shown: {_reason(e)}; {how} to have a resume hide them")

    def close(self) -> None:
        if self._writer is not None:
            with self._stop_on_error():
                self._writer.close()  # (flushes first: an error of its writing thread is raised here at the latest)
            self._writer = None

    @contextlib.contextmanager
    def _stop_on_error(self) -> Iterator[None]:
        """Calls to TensorBoard's writer: an error there stops the events (:meth:`_stop`) instead of the run."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 - whatever the writer raised: the events stop, the run goes on
            self._stop(e)

    def _stop(self, error: Exception) -> None:
        """No more events, after one line saying why and what to do: TensorBoard's writing thread fails apart from
        the run (a full disk) and its error came back on a later call as a traceback that ended the run."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.close()
        except Exception:  # noqa: BLE001 - the same failure again: said below, once
            pass
        self._warn(f"TensorBoard stopped, no more events in {self._log_dir}: {_reason(error)}; {_way_out(error)}")


def _reason(error: BaseException) -> str:
    """The error in words; an OSError's without its file (tensorboard names the events file as bytes, and the
    warning names its folder)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}"


def _way_out(error: BaseException) -> str:
    """What to do when the events cannot be written, and where the numbers are meanwhile."""
    space = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    return (("free space there (a resumed run writes them again from its checkpoint on), or " if space else "")
            + "set LOG.TENSORBOARD False to go without; metrics.jsonl is still written and holds the same numbers")


_HOOK_BEFORE: Any = None  # the threading.excepthook that _quiet_hook passes other threads' errors on to


def _quiet_hook(args: Any) -> None:
    if isinstance(args.exc_value, Exception) and type(args.thread).__module__.startswith("tensorboard."):
        return
    _HOOK_BEFORE(args)


def _quiet_writer_threads() -> None:
    """An error of a thread of tensorboard's (its events writer: a full disk) prints no traceback: the writer raises
    it again on the run's next call or at its close, which says it in one line (:meth:`TensorBoardEvents._stop`).
    Any other thread's error goes to the hook there was."""
    global _HOOK_BEFORE
    if threading.excepthook is not _quiet_hook:  # (again where another hook was set since)
        _HOOK_BEFORE, threading.excepthook = threading.excepthook, _quiet_hook
