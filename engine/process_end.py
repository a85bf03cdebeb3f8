"""How one process of a run says that it ends: on the console, in its ``log_rank<r>.txt`` and, under torchrun, in
the error file torchrun's failure report reads (``distributed.record_failure``).

In a run of several processes, one process's failure reaches the others as a lost connection in their next
collective; their lines say so, so that the console and the logs point to the process that failed first.
"""

from __future__ import annotations

import os
import sys
import traceback

from . import distributed

__all__ = ["crash_line", "report_end", "end_before_run"]


def crash_line(error: BaseException, several_processes: bool) -> str:
    """The ``error:`` line of an unexpected exception. In a run of several processes, a collective that lost its
    connection to another process is said to be the consequence it is: the process that failed or was killed
    first names the cause (in its own line, its log_rank<r>.txt or, killed, the launcher's report)."""
    text = f"{type(error).__name__}: {error}".strip().splitlines()[0]
    if several_processes and distributed.lost_peer(error):
        return ("error: this process lost its connection to another process of the run, which failed or was "
                f"killed: that process's error (its own line, its log_rank<r>.txt) says why ({text})")
    return f"error: {text}"


def report_end(run, line: str, with_traceback: bool = False) -> float | None:
    """How this process ends, in one line: in its log_rank<r>.txt and on the console. Rank 0's line is one of the
    run's console lines; another rank prints only here, with its rank: an error of one rank alone (a file only it
    reads) would otherwise be in its log file only, while the console showed the other ranks' lost connections.
    Under torchrun the line (after the traceback of the exception being handled, ``with_traceback``) is also what
    its report shows for this rank; returns the time it was recorded there (``distributed.record_failure``)."""
    recorded = distributed.record_failure(line, f"{traceback.format_exc()}{line}" if with_traceback else "")
    try:
        run.metrics.info(line)
    except (OSError, ValueError):  # the log is on a full disk, or closed
        if run.ctx.is_main:
            print(line, file=sys.stderr, flush=True)
    if not run.ctx.is_main:
        print(f"[rank {run.ctx.rank}] {line}", file=sys.stderr, flush=True)
    return recorded


def _with_rank(line: str) -> str:
    """``line`` as a process that has no run yet prints it: with its rank (from the launcher's environment) when
    it is not rank 0 of several, as :func:`report_end` prints a running rank's line."""
    rank, world = os.environ.get("RANK", ""), os.environ.get("WORLD_SIZE", "")
    several = world.isdigit() and int(world) > 1
    return f"[rank {rank}] {line}" if several and rank.isdigit() and int(rank) > 0 else line


def end_before_run(line: str, code: int | None, error: BaseException | None = None) -> int | None:
    """End a process that fails before its run (and log) exist: ``line`` on stderr, recorded for torchrun (with the
    traceback of a crash, ``error``, which Python prints itself at exit), then out of the process group; returns
    ``code``."""
    lost = error is not None and distributed.lost_peer(error)
    if error is None or lost:
        print(_with_rank(line), file=sys.stderr, flush=True)
    recorded = distributed.record_failure(line, f"{traceback.format_exc()}{line}" if error is not None else "")
    if not lost:
        distributed.leave_after(recorded)
    distributed.shutdown(graceful=False)
    return code
