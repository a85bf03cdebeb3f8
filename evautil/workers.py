"""Worker processes: one way to start them and one map with a progress bar (or progress lines for a log).

Start method: ``forkserver`` (``spawn`` where it does not exist), never ``fork``. A forked child inherits the
parent's threads' locks and objects without their threads: a process that holds DALI pipelines, CUDA or FFmpeg
threads can deadlock in the child (a DALI pipeline's destructor run by the child's garbage collector waits for
threads that exist only in the parent). A worker imports its job's module and, as multiprocessing does for every
non-fork start, the main script's module again; the guarded ``if __name__ == "__main__":`` part does not run.
Neither imports torch: the scripts that start workers (``train.py``, the tools) import torch and the engine inside
their functions, and the jobs' modules do not import it (``dali_pipelines.routing``, which DALI's CPU decoder
brings in through ``pipelines``, only inside its functions). A worker holds PyAV, numpy and, for DALI's CPU
decoder, DALI: in a 2-core CPU run of ``configs/demo.yaml`` a decode worker took about 55 MB resident (130 MB with
DALI's CPU decoder), against about 700 MB, 450-600 MB of it its own, when it imported torch.

Every worker (:func:`worker_setup`) ignores SIGTERM, SIGUSR1 and SIGINT: cluster schedulers signal every process
of a job, and the main process handles the stop (it saves, then ends its pools); a worker killed by the signal
would break the pool during the last steps before the save. The helper processes of multiprocessing (fork server,
resource tracker) are started with those signals blocked, for the same reason, and so is every worker until its
setup ignores them (the fork server's inherit its mask; :class:`WorkerProcess` blocks them for a spawned one, which
a Ctrl-C to the process group otherwise interrupted in its imports). Because workers ignore SIGTERM, the
pools end them with SIGKILL (:class:`WorkerProcess`). A worker also never outlives its main process: a thread in it
watches the main process and exits the worker within :data:`WATCH_INTERVAL_S` once it is gone (killed, crashed,
ended). The other way round, a worker that dies stops nothing: pools notice it (:func:`result_unless_a_worker_dies`)
and :func:`map_with_progress` runs its items again, convicting only an item that kills a worker when run alone;
with a time limit, an item that gives no result in time is found the same way. A Ctrl-C that ends the main process
while a pool starts a worker leaves the main process's one line only: at exit it kills the workers no pool recorded
yet (:func:`_kill_workers_left`), and a worker whose start fails on what the ending main process removed (its pool's
semaphores) exits without a traceback (:func:`_worker_starting`).
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures as cf
import concurrent.futures.process  # noqa: F401 - its exit hook is registered before this module's (below)
import multiprocessing as mp
import multiprocessing.context as mpc
import multiprocessing.util  # noqa: F401 - its exit handler is registered before this module's (below)
import os
import pickle
import queue
import signal
import sys
import threading
import time
import weakref
from typing import Callable, Iterator, Sequence

from .progress import LINE_EVERY_S, ProgressLines

__all__ = ["START_METHOD", "WATCH_INTERVAL_S", "IGNORED_SIGNALS", "DEATH_CHECK_S", "mp_context", "process_pool",
           "worker_setup", "pool_processes", "pool_lost_a_worker", "abandon_pool", "submit_to_pool", "jobs_started",
           "result_unless_a_worker_dies", "ResultOverdue", "InlineExecutor", "DaemonThreadPool", "map_with_progress",
           "started_pool", "WORKER_START_S", "WorkerStartError", "WorkerCrashError", "WorkerTimeoutError",
           "MAX_OVERDUE_IN_A_ROW", "usable_cpus", "sendable_error"]

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


def usable_cpus() -> int:
    """CPU cores this process may run on: the affinity mask (a batch job's share of a node), not the machine's
    total, which os.cpu_count() gives."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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


class InlineExecutor(cf.Executor):
    """Runs submissions immediately in the calling thread (0 workers), delivering results through futures."""

    def submit(self, fn, /, *args, **kwargs):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - delivered through the future like a real executor
            fut.set_exception(e)
        return fut


class DaemonThreadPool(cf.Executor):
    """A thread pool whose threads never hold up the end of the process. ``ThreadPoolExecutor`` joins its threads
    when the interpreter exits, so one read stuck in the kernel (a network file system that stopped answering)
    kept a finished run from ending, even after its pool was given up (``shutdown(wait=False)``)."""

    def __init__(self, workers: int, name: str):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
                         for i in range(max(1, int(workers)))]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            fut, fn, args, kwargs = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - delivered through the future
                fut.set_exception(e)
            else:
                fut.set_result(result)
            del job, fut  # a finished result is not kept alive by an idle thread
        self._queue.put(None)  # for the next thread

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a thread pool that was shut down")
            fut: cf.Future = cf.Future()
            self._queue.put((fut, fn, args, kwargs))
            return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if cancel_futures:
                    while True:
                        try:
                            job = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        if job is not None:
                            job[0].cancel()
                self._queue.put(None)
        if wait:
            for t in self._threads:
                t.join()


class WorkerStartError(RuntimeError):
    """Worker processes die before they run anything, pool after pool: the environment, not the work."""


class WorkerCrashError(RuntimeError):
    """One item kills the worker process that runs it, even when it runs alone (a crash in a native library, the
    out-of-memory killer); the message names the item."""


class WorkerTimeoutError(RuntimeError):
    """Items give no result within the time allowed, one without a verdict for that (``on_timeout``), or
    :data:`MAX_OVERDUE_IN_A_ROW` in a row: the storage they are read from, or the work itself, does not answer.
    The message names the (last) item."""


# So many items (videos) in a row that give no result within the time allowed: the storage hangs, not one file.
MAX_OVERDUE_IN_A_ROW = 3


# How long a new pool's first worker may take to start and run a no-op: its imports took 2 s at a load of 10 on 2
# cores; one far slower is stuck (an import from a file system that stopped answering), not slow.
WORKER_START_S = 120.0

# While waiting for a result, how often to check that no worker has died unnoticed (pool_lost_a_worker).
DEATH_CHECK_S = 1.0


def _ready() -> bool:
    return True


def _exit_description(pool: cf.Executor) -> str:
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
    if _JOB_STARTS is not None:
        _JOB_STARTS.value += 1
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
            how = f"die as they start ({_exit_description(pool)})"
        except ResultOverdue:
            how = f"do not answer within {limit:g} s of their start"
        abandon_pool(pool)
    raise WorkerStartError(
        f"{what} {how}, twice in a row; any errors of theirs are printed above. A script "
        "that starts workers must be a file with the `if __name__ == \"__main__\":` guard (not standard input "
        "or an interactive session), and each worker must be able to import the function it runs")


def _run_alone(pool: cf.ProcessPoolExecutor | None, fn: Callable, item, on_crash: Callable | None,
               timeout: float = 0, on_timeout: Callable | None = None):
    """``fn(item)`` in a one-worker pool (started when ``pool`` is None) -> (the pool, None once it broke; result;
    whether it is an overdue verdict). If the worker dies, the item is convicted: ``on_crash(item, how)`` is its
    result, or WorkerCrashError. ``timeout`` > 0: without a result after that many seconds, the pool is ended and
    ``on_timeout(item, how)`` is the result (see :func:`_overdue_verdict`)."""
    pool = pool or started_pool(1)
    try:
        return pool, result_unless_a_worker_dies(pool, submit_to_pool(pool, fn, item), timeout), False
    except cf.process.BrokenProcessPool:
        how = f"the worker process running it died ({_exit_description(pool)}), twice, the second time alone"
        abandon_pool(pool)
    except ResultOverdue:
        abandon_pool(pool)
        return None, _overdue_verdict(item, timeout, "twice, the second time alone", on_timeout), True
    if on_crash is None:
        raise WorkerCrashError(f"{item!r}: {how}")
    return None, on_crash(item, how), False


def _overdue_verdict(item, timeout: float, when: str, on_timeout: Callable | None):
    """``on_timeout(item, how)`` for an item that gave no result within ``timeout`` seconds, or WorkerTimeoutError
    naming it."""
    how = f"no result within {timeout:g} s, {when}"
    if on_timeout is None:
        raise WorkerTimeoutError(f"{item!r}: {how}")
    return on_timeout(item, how)


def _call_each(fn: Callable, xs: list) -> list:
    return [fn(x) for x in xs]


def _map_surviving_crashes(fn: Callable, items: Sequence, workers: int, on_crash: Callable | None,
                           timeout: float = 0, on_timeout: Callable | None = None) -> Iterator[tuple[int, object]]:
    """``(i, fn(items[i]))`` as they finish, in ``workers`` processes, a few items per task (per-task overhead is
    about 0.2 ms, comparable with a probe of a short video). A worker that dies takes only time with it: the items
    in flight then run again, one task each, and one that was in flight at two deaths runs alone
    (:func:`_run_alone`), so a crashing item is found without convicting its neighbours. (multiprocessing.Pool
    replaces a dead worker silently and waits forever for the result it took with it.)

    ``timeout`` > 0: when no task has finished for that many seconds, the pool is stalled and treated like one
    that lost a worker (the items in flight run again, one task each), except that an item in flight alone is
    overdue at once: ``on_timeout(item, how)`` is its result (:func:`_overdue_verdict`). A stalled worker cannot
    be told from a slow one, so the verdict is only as strong as the caller makes it (the index leaves such a video
    out of one build); :data:`MAX_OVERDUE_IN_A_ROW` verdicts in a row raise WorkerTimeoutError."""
    size = max(1, min(16, len(items) // (8 * workers)))  # small tasks keep the bar moving and the load balanced
    todo = collections.deque(list(range(k, min(k + size, len(items)))) for k in range(0, len(items), size))
    suspicion: collections.Counter = collections.Counter()
    inflight: dict[cf.Future, list[int]] = {}
    pool = alone = None
    overdue_in_a_row = 0

    def counted(i: int, result, overdue: bool) -> tuple[int, object]:
        nonlocal overdue_in_a_row
        overdue_in_a_row = overdue_in_a_row + 1 if overdue else 0
        if overdue_in_a_row >= MAX_OVERDUE_IN_A_ROW:
            raise WorkerTimeoutError(
                f"{overdue_in_a_row} items in a row gave no result within {timeout:g} s each (the last: "
                f"{items[i]!r}): what they are read from, or the work itself, does not answer")
        return i, result

    try:
        while todo or inflight:
            if pool is None:
                pool = started_pool(workers)
                last_finish = time.monotonic()  # the stall clock runs from the moment the pool can work
            broken = stalled = False
            while todo and len(inflight) < 2 * workers and not broken:  # two per worker: the next one queued
                task = todo.popleft()
                if suspicion[task[0]] >= 2:  # suspects travel alone
                    alone, result, overdue = _run_alone(alone, fn, items[task[0]], on_crash, timeout, on_timeout)
                    yield counted(task[0], result, overdue)
                    continue
                if not inflight:
                    last_finish = time.monotonic()  # an idle pool was not stalled
                try:
                    inflight[submit_to_pool(pool, _call_each, fn, [items[i] for i in task])] = task
                except cf.process.BrokenProcessPool:  # broke since the last look: this task never ran
                    todo.appendleft(task)
                    broken = True
            if inflight and not broken:
                done, _ = cf.wait(inflight, timeout=DEATH_CHECK_S, return_when=cf.FIRST_COMPLETED)
                broken = not done and pool_lost_a_worker(pool)
                stalled = not done and not broken and 0 < timeout <= time.monotonic() - last_finish
                for fut in done:
                    try:
                        results = fut.result()
                    except cf.process.BrokenProcessPool:
                        broken = True  # fut stays in flight: its items are suspects, with the others
                        continue
                    last_finish = time.monotonic()
                    for i, r in zip(inflight.pop(fut), results):
                        yield counted(i, r, False)
            if broken or stalled:
                suspects = sorted(i for task in inflight.values() for i in task)
                inflight.clear()
                abandon_pool(pool)
                pool = None
                if stalled and len(suspects) == 1:  # it had the pool to itself: as good as alone
                    i = suspects[0]
                    yield counted(i, _overdue_verdict(items[i], timeout, "the only item in flight", on_timeout),
                                  True)
                    continue
                suspicion.update(suspects)
                todo.extendleft([i] for i in reversed(suspects))
    finally:
        for p in (pool, alone):
            if p is not None:
                abandon_pool(p)


def map_with_progress(fn: Callable, items: Sequence, workers: int, desc: str, progress: bool = True,
                      unit: str = "item", ordered: bool = True, on_crash: Callable | None = None,
                      log: Callable[[str], None] | None = None, log_every_s: float = LINE_EVERY_S, timeout: float = 0,
                      on_timeout: Callable | None = None) -> Iterator:
    """``fn(x)`` for every item, in ``workers`` processes (0: one per CPU; 1, or one CPU: in this process; never
    more than there are items), with a progress bar on stderr. Yields the results in item order (``ordered``) or
    as they finish; ``fn`` must be a module-level function (it is pickled to the workers) and must not raise for
    one bad item if the others should go on.

    Without a bar (``progress`` False), ``log`` (when given) gets a plain progress line every ``log_every_s``
    seconds (:class:`~evautil.progress.ProgressLines`); with or without one, it gets a line with the total time
    once every item is done.

    A worker process that dies (a crash in a native library, the out-of-memory killer) stops nothing: its items
    are run again, and an item that kills a worker even when it runs alone gets ``on_crash(item, how)`` as its
    result (run in this process), or raises WorkerCrashError naming it. Workers that cannot start at all raise
    WorkerStartError.

    ``timeout`` > 0 (worker processes only): an item that gives no result for that many seconds, the second time
    alone, gets ``on_timeout(item, how)`` as its result, or raises WorkerTimeoutError naming it; so many such
    items in a row raise WorkerTimeoutError (see :func:`_map_surviving_crashes`).
    """
    from tqdm import tqdm

    processes = workers if workers > 0 else usable_cpus()
    n = min(processes, len(items))
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress or not items, file=sys.stderr,
               dynamic_ncols=True)
    lines = ProgressLines(desc, len(items), unit, log, None if progress else log_every_s) if log and items else None

    def tick() -> None:
        bar.update()
        if lines is not None:
            lines.update()

    try:
        if processes <= 1 or not items:
            for x in items:
                yield fn(x)
                tick()
        else:
            done: dict[int, object] = {}
            nxt = 0
            for i, r in _map_surviving_crashes(fn, items, n, on_crash, timeout, on_timeout):
                tick()
                if not ordered:
                    yield r
                    continue
                done[i] = r
                while nxt in done:
                    yield done.pop(nxt)
                    nxt += 1
        if lines is not None:
            lines.finish()
    finally:
        bar.close()
