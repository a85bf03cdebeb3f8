"""How one process of a run says that it ends: on the console, in its ``log_rank<r>.txt`` and, under torchrun, in
the error file torchrun's failure report reads (``distributed.record_failure``).

In a run of several processes, one process's failure reaches the others as a lost connection in their next
collective; their lines say so, so that the console and the logs point to the process that failed first. Rank 0's
exit code is recorded in ``OUTPUT/exit_status.json`` and in the job's own ``EVA_EXIT_STATUS_FILE`` (``record_exit``).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Callable

from evautil.files import atomic_write_text

from . import distributed
from .run_files import claimed_elsewhere, hold_outputs_to_exit, release_held_outputs
from .run_log import stamped

__all__ = ["EXIT_STATUS_ENV", "EXIT_STATUS_FILE", "crash_line", "report_end", "end_line_also_to",
           "end_line_said_by_rank_zero", "end_before_run", "record_exit", "with_exit_status"]

# OUTPUT/exit_status.json: how rank 0's process ended, for a batch script that requeues only a stopped run (exit 4):
# torchrun's own exit code is 1 for any worker's failure, a non-finite loss (3) or a bad input (2) included.
EXIT_STATUS_FILE = "exit_status.json"
# A file of the batch job's own that rank 0 writes the same record to: jobs sharing OUTPUT (a job submitted twice,
# array tasks) would otherwise remove or read each other's exit_status.json between one's write and its read.
EXIT_STATUS_ENV = "EVA_EXIT_STATUS_FILE"
EXIT_MEANINGS = {0: "finished", 1: "crashed", 2: "bad input or a file that cannot be written",
                 3: "non-finite loss or gradients",
                 4: "stopped by a signal, resumable",
                 5: "another process of the run stopped answering or ended early",  # liveness.UNANSWERED_EXIT_CODE
                 130: "interrupted (Ctrl-C)"}


def crash_line(error: BaseException, several_processes: bool) -> str:
    """The ``error:`` line of an unexpected exception. In a run of several processes, a collective that lost its
    connection to another process is said to be the consequence it is: the process that failed or was killed
    first names the cause (in its own line, its log_rank<r>.txt or, killed, the launcher's report)."""
    text = f"{type(error).__name__}: {error}".strip().splitlines()[0]
    if several_processes and distributed.lost_peer(error):
        # Of two processes the lost one is known; of more, the collective's error names only an address.
        other = _the_other_rank()
        whose, log = (f"rank {other}'s", f"log_rank{other}.txt") if other is not None else ("that process's",
                                                                                             "log_rank<r>.txt")
        return ("error: this process lost its connection to another process of the run, which failed or was "
                f"killed: {whose} error (its own line, its {log}, or for a process killed outright the launcher's "
                f"report) says why ({text})")
    return f"error: {text}"


def _the_other_rank() -> int | None:
    """The rank of the one other process of a run of two (None in a run of more, or outside a process group)."""
    if not distributed.joined():
        return None
    import torch.distributed as dist

    return 1 - dist.get_rank() if dist.get_world_size() == 2 else None


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


# The log_rank<r>.txt of a run whose building failed or was stopped after it opened that log (end_line_also_to).
_UNBUILT_RUN_LOG: list[str] = []


def end_line_also_to(log_path: str) -> None:
    """The building of a run failed after its log was opened (``wiring.build_run``, which closes it): the line that
    :func:`end_before_run` prints next ends that log too, as a running process's line ends its (report_end)."""
    _UNBUILT_RUN_LOG[:] = [log_path]


# Set on a rank other than 0 that fails with rank 0's own error (end_line_said_by_rank_zero).
_SAID_BY_RANK_ZERO: list[bool] = []


def end_line_said_by_rank_zero() -> None:
    """This process fails with the error rank 0 fails with and prints (its run lock refused, sent to every rank):
    the line that :func:`end_before_run` ends it with next is not printed again with this rank's prefix (it is
    still recorded for torchrun's report, and the exit code is the same)."""
    _SAID_BY_RANK_ZERO[:] = [True]


def end_before_run(line: str, code: int | None, error: BaseException | None = None) -> int | None:
    """End a process that fails before its run exists: ``line`` on stderr (not when rank 0 prints it:
    :func:`end_line_said_by_rank_zero`; and at the end of the log a run being built had opened:
    :func:`end_line_also_to`), recorded for torchrun (with the traceback of a crash, ``error``, which Python prints
    itself at exit), then out of the process group; returns ``code``."""
    lost = error is not None and distributed.lost_peer(error)
    if (error is None or lost) and not _SAID_BY_RANK_ZERO:
        print(_with_rank(line), file=sys.stderr, flush=True)
    _SAID_BY_RANK_ZERO.clear()
    for log in _UNBUILT_RUN_LOG:
        try:
            with open(log, "a", encoding="utf-8", errors="surrogateescape") as f:  # as MetricLogger writes it
                f.write(stamped(line))
        except OSError:  # a full disk: the console has the line
            pass
    _UNBUILT_RUN_LOG.clear()
    recorded = distributed.record_failure(line, f"{traceback.format_exc()}{line}" if error is not None else "")
    if not lost:
        distributed.leave_after(recorded)
    distributed.shutdown(graceful=False)
    return code


def record_exit(output_dir: str | None, code: int) -> None:
    """Rank 0 (or a process outside a launcher) writes ``{"exit_code", "meaning"}`` to ``output_dir``'s
    :data:`EXIT_STATUS_FILE`, atomically; nothing when that folder does not exist (yet). The same record goes to
    the file :data:`EXIT_STATUS_ENV` names, if any, also for a run the run lock refused (that file is its job's
    own). ``output_dir`` None (a dry run): nothing anywhere. A failed write is left unsaid: the exit code says it
    too."""
    if not output_dir or os.environ.get("RANK", "0") != "0":
        return
    record = json.dumps({"exit_code": code, "meaning": EXIT_MEANINGS.get(code, "ended")}) + "\n"
    _write_quietly(os.environ.get(EXIT_STATUS_ENV, ""), record)
    if not os.path.isdir(output_dir):
        return  # a run that ends before it made OUTPUT leaves no folder behind
    if claimed_elsewhere(output_dir):  # refused: another run writes OUTPUT, and its own status, when it ends
        return
    _write_quietly(os.path.join(output_dir, EXIT_STATUS_FILE), record)


def _write_quietly(path: str, text: str) -> None:
    if not path:
        return
    try:
        atomic_write_text(path, text)
    except OSError:
        pass


def with_exit_status(body: Callable[[dict], int], output_dir: str | None) -> int:
    """``body(ended)``'s exit code, which rank 0 also writes with :func:`record_exit` to ``ended["output"]``
    (``output_dir`` at first, which ``body`` replaces once the config names OUTPUT; None: nowhere): 1 when ``body``
    raises, 130 on Ctrl-C. The run lock ``body`` takes is held until that record is written, on every way out: a
    new run that took OUTPUT before removed the half-written record with the other killed writes."""
    ended = {"output": output_dir, "code": 1}
    hold_outputs_to_exit()
    try:
        ended["code"] = body(ended)
        return ended["code"]
    except KeyboardInterrupt:
        ended["code"] = 130
        raise
    finally:
        try:
            record_exit(ended["output"], ended["code"])
        finally:
            release_held_outputs()
