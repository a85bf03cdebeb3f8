"""Pools of worker processes: starting one whose workers are known to start, submitting a job so that its error
comes back whole, waiting for a result while watching for a worker's death or an overrun, and abandoning a broken
pool without waiting on it. The worker processes themselves, their signals and their watch on the main process are
:mod:`evautil.worker_process`'s.

A worker that dies stops nothing: the pools notice it (:func:`result_unless_a_worker_dies`, also in the ways
concurrent.futures does not), and their callers decide what to run again (``evautil.workers.map_with_progress``).
"""

from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures.process  # noqa: F401 - its exit hook is registered before this module's (below)
import os
import pickle
import signal
import threading
import time
import weakref
from typing import Callable

from .worker_process import START_METHOD, count_job_start, mp_context, worker_setup

__all__ = ["DEATH_CHECK_S", "process_pool", "pool_processes", "pool_lost_a_worker", "abandon_pool", "submit_to_pool",
           "jobs_started", "result_unless_a_worker_dies", "ResultOverdue", "started_pool", "WORKER_START_S",
           "WorkerStartError", "sendable_error", "exit_description"]


def process_pool(workers: int, method: str = START_METHOD) -> cf.ProcessPoolExecutor:
    """A process pool of ``workers`` processes started with ``method``, set up by :func:`worker_setup`. A
    one-worker pool counts the jobs its worker starts (:func:`jobs_started`)."""
    workers = max(1, int(workers))
    context = mp_context(method)
    # one writer: the count is exact (several workers' increments could overlap; nothing needs theirs)
    starts = context.RawValue("q", 0) if workers == 1 else None
    pool = cf.ProcessPoolExecutor(workers, mp_context=context, initializer=worker_setup,
                                  initargs=(os.getpid(), starts))
    pool.job_starts = starts  # type: ignore[attr-defined]
    return pool


def jobs_started(pool: cf.Executor | None) -> int | None:
    """How many jobs submitted with :func:`submit_to_pool` the worker of one-worker process pool ``pool`` has
    started (taken and begun to run), also after the pool broke; None for another pool. A job submitted when the
    count was n has started once it is above n, if the pool holds no other work: a pool that breaks before that
    was not broken by the job."""
    starts = getattr(pool, "job_starts", None)
    return None if starts is None else int(starts.value)


def pool_processes(pool: cf.Executor | None) -> list:
    """The worker processes of a process pool (none for another executor, or None)."""
    # ProcessPoolExecutor keeps its workers in a private dict; nothing public lists them (before Python 3.14).
    return list((getattr(pool, "_processes", None) or {}).values())


# Pools given up by abandon_pool: their workers are killed, so a future of theirs that is not done never will be.
_ABANDONED: weakref.WeakSet = weakref.WeakSet()


def pool_lost_a_worker(pool: cf.Executor) -> bool:
    """Whether a worker of ``pool`` has ended, or the pool is broken or abandoned (:func:`abandon_pool`). A pool's
    workers live as long as the pool, so an ended one died (killed, crashed). The pool notices that itself, except
    when the worker died in the middle of sending a result: its manager thread then waits for the rest of that
    message forever and the futures never finish. Nor does it fail a future submitted just as it noticed: CPython's
    manager thread fails the futures it has without the lock that ``submit`` holds, so one queued right after
    (between submit's broken check and the queueing) is never run nor failed. Abandoning the pool drops its worker
    list, so only the two marks tell that such a future will not end."""
    if pool in _ABANDONED or getattr(pool, "_broken", False):  # private: set by the manager on a worker's death
        return True
    return any(p.exitcode is not None for p in pool_processes(pool))


# The manager threads of abandoned pools, while they run (threading keeps a running thread referenced).
_ABANDONED_MANAGERS: weakref.WeakSet = weakref.WeakSet()
# At most this long, at exit, for the manager threads of abandoned pools to end (they need no wake-up: their
# workers are dead and their result stream closed, so they end within milliseconds).
MANAGER_EXIT_WAIT_S = 10.0


def _join_abandoned_managers() -> None:
    """At exit, before concurrent.futures' own hook: let the manager threads of abandoned pools end. That hook
    (CPython 3.11) writes to every manager's wake-up pipe without the lock a manager holds to close it, so a
    manager ending at that moment, e.g. of a pool given up just before a stopped command returned, made it fail
    with EBADF and a traceback after the command's last line. Threading runs its exit hooks last registered first."""
    deadline = time.monotonic() + MANAGER_EXIT_WAIT_S
    for manager in list(_ABANDONED_MANAGERS):
        manager.join(max(0.0, deadline - time.monotonic()))


threading._register_atexit(_join_abandoned_managers)  # private, as the hook it comes before


def abandon_pool(pool: cf.Executor) -> None:
    """End a broken pool without waiting: kill its remaining workers (one may be blocked forever on a queue lock
    that the dead one held) and close this process's end for writing results, so that the pool's manager thread,
    even one stuck reading a half-sent result, sees the end of the stream, fails the pending futures and exits
    (the interpreter waits for that thread at exit: :func:`_join_abandoned_managers`)."""
    _ABANDONED.add(pool)
    manager = getattr(pool, "_executor_manager_thread", None)  # private: None before the first submit
    if manager is not None:
        _ABANDONED_MANAGERS.add(manager)
    for p in pool_processes(pool):
        if p.exitcode is None:
            p.kill()
    result_queue = getattr(pool, "_result_queue", None)
    writer = getattr(result_queue, "_writer", None)
    if writer is not None:
        writer.close()
    pool.shutdown(wait=False, cancel_futures=True)


class WorkerStartError(RuntimeError):
    """Worker processes die before they run anything, pool after pool: the environment, not the work."""


# How long a new pool's first worker may take to start and run a no-op: its imports took 2 s at a load of 10 on 2
# cores; one far slower is stuck (an import from a file system that stopped answering), not slow.
WORKER_START_S = 120.0

# While waiting for a result, how often to check that no worker has died unnoticed (pool_lost_a_worker).
DEATH_CHECK_S = 1.0


def _ready() -> bool:
    return True


def exit_description(pool: cf.Executor) -> str:
    """How the pool's dead workers ended: 'exit code 3', 'signal SIGSEGV', or 'ended' when it is not known."""
    # Read the exit codes after the pool's manager thread has reaped the workers: a fork-server worker's exit code
    # is read once from a pipe, and a second thread polling it at the same time gets 255 instead (CPython's
    # popen_forkserver). The thread is private; a manager stuck on a half-sent result is not waited for long.
    manager = getattr(pool, "_executor_manager_thread", None)
    if manager is not None and manager is not threading.current_thread():
        manager.join(timeout=2.0)
    ends = []
    for p in pool_processes(pool):
        code = p.exitcode
        if code is not None and code < 0:
            try:
                ends.append(f"signal {signal.Signals(-code).name}")
            except ValueError:
                ends.append(f"signal {-code}")
        elif code is not None:
            ends.append(f"exit code {code}")
    return ", ".join(sorted(set(ends))) or "ended"


def sendable_error(e: BaseException | None) -> BaseException | None:
    """``e``, or, when another process could not rebuild it from its pickle (a constructor that wants other
    arguments than the exception keeps, an attribute that does not pickle), its nearest built-in class with its
    class name and message: concurrent.futures would report such an exception as a worker's death (the pool
    breaks), and the job's own error would be lost; a rank's error sent to the others likewise. None stays None."""
    if e is None:
        return None
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - whatever pickling raises
        pass
    try:
        said = f"{type(e).__qualname__}: {e}"
    except Exception:  # noqa: BLE001 - a __str__ that fails too
        said = f"{type(e).__qualname__} (its message could not be read)"
    for cls in type(e).__mro__:
        if cls.__module__ == "builtins":
            try:
                stand_in = cls(said)
                pickle.loads(pickle.dumps(stand_in))
                return stand_in
            except Exception:  # noqa: BLE001 - a built-in that wants other arguments (UnicodeDecodeError)
                continue
    return RuntimeError(said)  # not reached: BaseException(said) pickles


def _run_job(fn: Callable, *args):
    """What :func:`submit_to_pool` runs in a worker: ``fn(*args)``, counted as started in a one-worker pool, and
    an exception sent back in a form the main process can rebuild (:func:`sendable_error`)."""
    count_job_start()
    try:
        return fn(*args)
    except BaseException as e:  # noqa: BLE001 - re-raised, in a sendable form
        stand_in = sendable_error(e)
        if stand_in is e:
            raise
        raise stand_in from e  # the traceback sent along shows the original


def submit_to_pool(pool: cf.Executor, fn: Callable, *args) -> cf.Future:
    """``pool.submit(fn, *args)``; in a process pool ``fn`` runs through :func:`_run_job` (its start counted,
    its exception sent in a form that can be rebuilt here). The OSError ('Bad file descriptor') a process pool
    raises when it breaks while starting a worker for this submission is the BrokenProcessPool it means:
    CPython's manager thread closes the pool's queues while the new worker is being handed them."""
    job = (_run_job, fn, *args) if isinstance(pool, cf.ProcessPoolExecutor) else (fn, *args)
    try:
        return pool.submit(*job)
    except OSError as e:
        broken = getattr(pool, "_broken", False)  # private: set before the queues are closed
        if broken:
            raise cf.process.BrokenProcessPool(str(broken)) from e
        raise


class ResultOverdue(Exception):
    """A result was waited for longer than the caller allows (:func:`result_unless_a_worker_dies`); the work itself
    may still be running."""


def result_unless_a_worker_dies(pool: cf.Executor | None, fut: cf.Future, timeout: float = 0):
    """``fut``'s result; BrokenProcessPool when a worker of process pool ``pool`` dies first, also in the ways the
    pool does not notice by itself (:func:`pool_lost_a_worker`). Any other executor (or None) is only waited on.
    ``timeout`` > 0: ResultOverdue once the result has been waited for that many seconds."""
    deadline = time.monotonic() + timeout if timeout > 0 else None
    # fut.done() too: cf.wait never counts a future cancelled in its pool's queue as done (no worker took it)
    while not fut.done():
        step = DEATH_CHECK_S if deadline is None else max(0.0, min(DEATH_CHECK_S, deadline - time.monotonic()))
        if cf.wait([fut], timeout=step).done:
            break
        if pool_lost_a_worker(pool):
            if fut.done():  # finished meanwhile: its result is good
                break
            raise cf.process.BrokenProcessPool("a worker process died")
        if deadline is not None and time.monotonic() >= deadline:
            raise ResultOverdue(f"no result after {timeout:g} s")
    return fut.result()


def started_pool(workers: int, method: str = START_METHOD, what: str = "worker processes",
                 timeout: float | None = None) -> cf.ProcessPoolExecutor:
    """A process pool of ``workers`` processes started with ``method`` whose workers are known to start (one has run
    a no-op within ``timeout`` seconds: :data:`WORKER_START_S` when None, 0 for ever). A pool that loses its first
    worker before that, or gives no answer in time (an import stuck on a file system that stopped answering), is
    ended and one more is tried; WorkerStartError, naming ``what`` and how they failed, when that one fails too."""
    limit = WORKER_START_S if timeout is None else float(timeout)
    for _ in range(2):
        pool = process_pool(workers, method)
        try:
            result_unless_a_worker_dies(pool, submit_to_pool(pool, _ready), limit)
            return pool
        except cf.process.BrokenProcessPool:
            how = f"die as they start ({exit_description(pool)})"
        except ResultOverdue:
            how = f"do not answer within {limit:g} s of their start"
        abandon_pool(pool)
    raise WorkerStartError(
        f"{what} {how}, twice in a row; any errors of theirs are printed above. A script "
        "that starts workers must be a file with the `if __name__ == \"__main__\":` guard (not standard input "
        "or an interactive session), and each worker must be able to import the function it runs")

