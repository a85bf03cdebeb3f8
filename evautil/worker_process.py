"""One worker process's start and life: the start method (``forkserver``, else ``spawn``; never ``fork``), the
signals it leaves to the main process, its watch on the main process, and the quiet end of a start that the main
process's own end cut short. The pools that start these processes are :mod:`evautil.process_pools`'s.

A forked child inherits the parent's threads' locks and objects without their threads: a process that holds DALI
pipelines, CUDA or FFmpeg threads can deadlock in the child (a DALI pipeline's destructor run by the child's garbage
collector waits for threads that exist only in the parent). A worker imports its job's module and, as
multiprocessing does for every non-fork start, the main script's module again; the guarded
``if __name__ == "__main__":`` part does not run. Neither imports torch: the scripts that start workers
(``train.py``, the tools) import torch and the engine inside their functions, and the jobs' modules do not import it
(``dali_pipelines.routing``, which DALI's CPU decoder brings in through ``pipelines``, only inside its functions). A
worker holds PyAV, numpy and, for DALI's CPU decoder, DALI: in a 2-core CPU run of ``configs/demo.yaml`` a decode
worker took about 55 MB resident (130 MB with DALI's CPU decoder), against about 700 MB, 450-600 MB of it its own,
when it imported torch.

Every worker (:func:`worker_setup`) ignores SIGTERM, SIGUSR1 and SIGINT: cluster schedulers signal every process
of a job, and the main process handles the stop (it saves, then ends its pools); a worker killed by the signal
would break the pool during the last steps before the save. The helper processes of multiprocessing (fork server,
resource tracker) are started with those signals blocked, for the same reason, and so is every worker until its
setup ignores them (the fork server's inherit its mask; :class:`WorkerProcess` blocks them for a spawned one, which
a Ctrl-C to the process group otherwise interrupted in its imports). Because workers ignore SIGTERM, the
pools end them with SIGKILL (:class:`WorkerProcess`). A worker also never outlives its main process: a thread in it
watches the main process and exits the worker within :data:`WATCH_INTERVAL_S` once it is gone (killed, crashed,
ended). A Ctrl-C that ends the main process while a pool starts a worker leaves the main process's one line only: at
exit it kills the workers no pool recorded yet (:func:`_kill_workers_left`), and a worker whose start fails on what
the ending main process removed (its pool's semaphores) exits without a traceback (:func:`_worker_starting`).
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import multiprocessing.context as mpc
import multiprocessing.util  # noqa: F401 - its exit handler is registered before this module's (below)
import os
import signal
import sys
import threading
import time

__all__ = ["START_METHOD", "WATCH_INTERVAL_S", "IGNORED_SIGNALS", "WorkerProcess", "mp_context", "worker_setup",
           "count_job_start"]

START_METHOD = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
# How often a worker checks that its main process is still there.
WATCH_INTERVAL_S = 0.5
# Left to the main process (engine/preemption.py handles SIGTERM and SIGUSR1; Ctrl-C reaches the main process).
IGNORED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class _Worker:
    """What the pools' worker processes add to multiprocessing's: a pool ends them with SIGKILL (they ignore SIGTERM,
    so a pool's ``terminate`` would not end them and the pool would wait for them forever), and a start-up that the
    main process's end cuts short prints nothing (:func:`_worker_starting`)."""

    def terminate(self) -> None:
        self.kill()

    def __getstate__(self) -> dict:
        # the guard comes first, so that the worker runs it before it rebuilds the pool's queues from this pickle
        main_pid = os.getpid()
        return {"_start_guard": _StartGuard(main_pid, _process_identity(main_pid)), **self.__dict__}

    def __setstate__(self, state: dict) -> None:
        state.pop("_start_guard", None)
        self.__dict__.update(state)


class WorkerProcess(_Worker, mpc.SpawnProcess):
    """A spawned worker (see :class:`_Worker`), started with :data:`IGNORED_SIGNALS` blocked, as the fork server's
    workers are (:func:`_start_helper_processes`): a Ctrl-C, which reaches the whole process group, stays pending
    in it until :func:`worker_setup` ignores it. Unblocked, it interrupted the worker's import of the main script
    (seconds) and printed a KeyboardInterrupt traceback after the main process's one line."""

    def start(self) -> None:
        # the mask of this thread, inherited across fork and exec; one sent to this process meanwhile is delivered
        # when it is restored
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, IGNORED_SIGNALS)
        try:
            super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


class _SpawnWorkers(mpc.SpawnContext):
    Process = WorkerProcess


_CONTEXTS: dict[str, type] = {"spawn": _SpawnWorkers}

if hasattr(mpc, "ForkServerContext"):  # POSIX
    class ForkServerWorkerProcess(_Worker, mpc.ForkServerProcess):
        """A worker started by the fork server (see :class:`_Worker`)."""

    class _ForkServerWorkers(mpc.ForkServerContext):
        Process = ForkServerWorkerProcess

    _CONTEXTS["forkserver"] = _ForkServerWorkers


class _StartGuard:
    """Sent with a worker's start-up data: reading it calls :func:`_worker_starting` in the worker."""

    def __init__(self, main_pid: int, identity: str | None) -> None:
        self.main_pid, self.identity = main_pid, identity

    def __reduce__(self):
        return _worker_starting, (self.main_pid, self.identity)


# How long a worker whose start failed waits for its main process to end before it reports the failure: the main
# process removes its pools' semaphores in its last steps, so one that removed them under a starting worker ends soon.
MAIN_END_WAIT_S = 5.0
# In a worker until worker_setup: the excepthook that _worker_starting replaced.
_EXCEPTHOOK_BEFORE_SETUP = None


def _worker_starting(main_pid: int, identity: str | None) -> None:
    """In a worker, as it reads its start-up data: until :func:`worker_setup`, a failure of its start that the main
    process's end can cause (the pool's semaphores, which that end removes: FileNotFoundError; start-up data cut
    short: EOFError) prints nothing when the main process ends within :data:`MAIN_END_WAIT_S`; the worker exits with
    status 1. A Ctrl-C reaches the whole process group and ends the main process, which had started a worker but not
    yet recorded it in its pool: nothing killed that worker, and its traceback came after the main process's one
    line. Other failures, and these while the main process goes on, are printed as before."""
    global _EXCEPTHOOK_BEFORE_SETUP
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb) -> None:
        if not (issubclass(kind, (OSError, EOFError)) and _ends_within(main_pid, identity, MAIN_END_WAIT_S)):
            previous(kind, error, tb)

    _EXCEPTHOOK_BEFORE_SETUP = previous
    sys.excepthook = hook


def _start_helper_processes(method: str) -> None:
    """Start multiprocessing's own helper processes (the resource tracker; the fork server for 'forkserver') with
    :data:`IGNORED_SIGNALS` blocked, unless they run already.

    torchrun stops its workers with ``killpg``, so its signal reaches every process of a rank's process group,
    these helpers included, and neither of them survives SIGUSR1 (nor the fork server SIGTERM): the pool a rank
    starts next (evaluation after the stop request, a restarted pool) then breaks. A blocked signal stays pending
    instead. The block mask is inherited across fork and exec; the helpers keep it, and so do the workers the fork
    server starts until :func:`worker_setup` ignores the signals. Blocking the signal here, unlike ignoring it,
    loses nothing: one sent to this process meanwhile is delivered when the mask is restored."""
    from multiprocessing import resource_tracker

    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, IGNORED_SIGNALS)
    try:
        resource_tracker.ensure_running()
        if method == "forkserver":
            from multiprocessing import forkserver

            # ensure_running above unblocks SIGINT and SIGTERM on its way out: block them again
            signal.pthread_sigmask(signal.SIG_BLOCK, IGNORED_SIGNALS)
            forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def mp_context(method: str = START_METHOD) -> mp.context.BaseContext:
    """The context that starts worker processes with ``method`` ('forkserver', else 'spawn'; never 'fork'); its
    helper processes are started here, shielded from the scheduler's signals (:func:`_start_helper_processes`)."""
    if method not in ("forkserver", "spawn"):
        raise ValueError(f"worker start method must be 'forkserver' or 'spawn' (never 'fork'), got {method!r}")
    _start_helper_processes(method)
    return _CONTEXTS.get(method, _SpawnWorkers)()


def _process_identity(pid: int) -> str | None:
    """Something that tells process ``pid`` apart from a later one with the same id (its start time, from
    /proc), "" where /proc is not available, or None when the process is gone (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            after_name = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: only ask whether the id exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    state, start_time = after_name[0], after_name[19]
    return None if state in ("Z", "X", "x") else start_time


def _ends_within(pid: int, identity: str | None, seconds: float | None, interval: float = 0.05) -> bool:
    """Whether process ``pid`` (as :func:`_process_identity` knew it) is gone, or goes within ``seconds`` (None:
    waits for it to go), looked at every ``interval`` seconds."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while _process_identity(pid) == identity:
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def _watch_main_process(main_pid: int, identity: str | None) -> None:
    _ends_within(main_pid, identity, None, WATCH_INTERVAL_S)
    os._exit(1)  # the main process is gone: nobody will read this worker's results


# In a worker of a one-worker pool: the count of the jobs it has started, shared with the main process.
_JOB_STARTS = None


def worker_setup(main_pid: int, job_starts=None) -> None:
    """Initializer of every worker process: ignore the scheduler's signals (:data:`IGNORED_SIGNALS`) and exit
    when process ``main_pid`` ends. ``job_starts``: the shared count of a one-worker pool (:func:`jobs_started`)."""
    global _JOB_STARTS, _EXCEPTHOOK_BEFORE_SETUP
    _JOB_STARTS = job_starts
    for sig in IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    identity = _process_identity(main_pid)
    if identity is None:  # gone before this worker started
        os._exit(1)
    threading.Thread(target=_watch_main_process, args=(main_pid, identity), name="main-process-watch",
                     daemon=True).start()
    if _EXCEPTHOOK_BEFORE_SETUP is not None:  # started: its failures are reported again (see _worker_starting)
        sys.excepthook, _EXCEPTHOOK_BEFORE_SETUP = _EXCEPTHOOK_BEFORE_SETUP, None


def count_job_start() -> None:
    """In a worker: one more job started, in the count of a one-worker pool that :func:`worker_setup` was given."""
    if _JOB_STARTS is not None:
        _JOB_STARTS.value += 1


def _kill_workers_left() -> None:
    """At exit, before multiprocessing's own exit handler: kill the worker processes still alive. By then
    concurrent.futures has joined every running pool's workers (threading's exit hooks come first) and abandoned
    pools' were killed, so one left was caught by an interrupt between its start and its pool's recording of it.
    Nothing would end it: multiprocessing's handler removes the pools' semaphores, then waits for it, and its start
    failed on the missing semaphores with a traceback after the command's interrupt line."""
    for p in mp.active_children():
        if isinstance(p, _Worker):
            p.kill()


atexit.register(_kill_workers_left)  # atexit runs the last registered first: before multiprocessing's handler
