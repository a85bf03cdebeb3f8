"""The text of a run's log files: the time stamp of a line of ``log_rank<r>.txt``, the line saying a log that
cannot be written stopped, and the standard ``logging`` loggers (the data pipeline's) whose records a run takes in
as lines of its own log (``MetricLogger.follow_logger``).
"""

from __future__ import annotations

import errno
import logging
import time
from typing import Any

from evautil.text import text_lines

__all__ = ["stamped", "log_stopped", "follow", "let_go"]


def stamped(msg: str) -> str:
    """``msg`` as a log_rank<r>.txt keeps it: each of its lines after the time."""
    stamp = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] "
    return "".join(stamp + line + "\n" for line in text_lines(msg) or [""])  # a path may hold \x1c, \x85, ...


def log_stopped(path: str, error: OSError) -> str:
    """The one warning of a log file whose write failed (a full disk): the file, why, and what to do. The run goes
    on without it: its lines were on the console already."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space on its disk"
    elif error.errno == errno.EFBIG:
        fix = "lift the file size limit (ulimit -f)"
    else:
        fix = "make it writable"
    return (f"cannot write {path}: {error.strerror or error}; this rank's log stops here and the run goes on "
            f"without it (its console lines are printed as before): {fix} for the next run's lines")



# The propagate flag and level a followed logger had before its first follower (see follow).
_UNFOLLOWED: dict[str, tuple[bool, int]] = {}


class _RunLogHandler(logging.Handler):
    """Records of the standard ``logging`` loggers a run follows, as lines of its log (see :func:`follow`)."""

    def __init__(self, metrics: Any) -> None:
        super().__init__(logging.INFO)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.WARNING:
                self.metrics.warn(record.getMessage(), this_rank_only=getattr(record, "this_rank_only", False))
            else:
                self.metrics.info(record.getMessage())
        except Exception:  # noqa: BLE001 - logging must never stop the run (e.g. the log file's disk is full)
            self.handleError(record)



def follow(name: str, run: Any) -> None:
    """Until :func:`let_go`, the INFO and WARNING records of the ``logging`` logger ``name`` (and its children) go
    to ``run``'s ``info`` and ``warn`` (a ``MetricLogger``), and no longer to the root logger's handlers."""
    logger = logging.getLogger(name)
    if not any(isinstance(h, _RunLogHandler) for h in logger.handlers):  # the first follower keeps its state
        _UNFOLLOWED[name] = (logger.propagate, logger.level)
        logger.propagate = False  # a handler of the root logger would print every record a second time
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    logger.addHandler(_RunLogHandler(run))


def let_go(name: str, run: Any) -> None:
    """``run`` no longer follows the logger ``name``; the last follower gives it back its propagation and level."""
    logger = logging.getLogger(name)
    logger.handlers = [h for h in logger.handlers if getattr(h, "metrics", None) is not run]
    if not any(isinstance(h, _RunLogHandler) for h in logger.handlers):  # the last follower restores it
        propagate, level = _UNFOLLOWED.pop(name, (True, logging.NOTSET))
        logger.propagate = propagate
        logger.setLevel(level)  # not .level =: setLevel also clears the loggers' cached isEnabledFor
