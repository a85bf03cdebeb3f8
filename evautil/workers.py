"""Mapping a function over items in worker processes with a progress bar (or progress lines for a log), surviving
a worker's death and a stalled item; and the one place the rest of the project imports the worker machinery from.

Its parts, a job each: :mod:`evautil.worker_process` (a worker process's start method, signals and watch on the
main process), :mod:`evautil.process_pools` (a pool's start, jobs, results, and its end when a worker dies) and
:mod:`evautil.thread_pools` (executors without processes). Their public names are imported from here.

A worker that dies stops nothing: :func:`map_with_progress` runs its items again, convicting only an item that
kills a worker when run alone; with a time limit, an item that gives no result in time is found the same way.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import sys
import time
from typing import Any, Callable, Iterator, Sequence

from .process_pools import (DEATH_CHECK_S, WORKER_START_S, ResultOverdue, WorkerStartError, abandon_pool,
                            exit_description, jobs_started, pool_lost_a_worker, pool_processes, process_pool,
                            result_unless_a_worker_dies, sendable_error, started_pool, submit_to_pool)
from .progress import LINE_EVERY_S, ProgressLines
from .thread_pools import DaemonThreadPool, InlineExecutor
from .worker_process import IGNORED_SIGNALS, START_METHOD, WATCH_INTERVAL_S, mp_context, worker_setup

__all__ = ["START_METHOD", "WATCH_INTERVAL_S", "IGNORED_SIGNALS", "DEATH_CHECK_S", "mp_context", "process_pool",
           "worker_setup", "pool_processes", "pool_lost_a_worker", "abandon_pool", "submit_to_pool", "jobs_started",
           "result_unless_a_worker_dies", "ResultOverdue", "InlineExecutor", "DaemonThreadPool", "map_with_progress",
           "started_pool", "WORKER_START_S", "WorkerStartError", "WorkerCrashError", "WorkerTimeoutError",
           "MAX_OVERDUE_IN_A_ROW", "usable_cpus", "sendable_error"]


def usable_cpus() -> int:
    """CPU cores this process may run on: the affinity mask (a batch job's share of a node), not the machine's
    total, which os.cpu_count() gives."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class WorkerCrashError(RuntimeError):
    """One item kills the worker process that runs it, even when it runs alone (a crash in a native library, the
    out-of-memory killer); the message names the item."""


class WorkerTimeoutError(RuntimeError):
    """Items give no result within the time allowed, one without a verdict for that (``on_timeout``), or
    :data:`MAX_OVERDUE_IN_A_ROW` in a row: the storage they are read from, or the work itself, does not answer.
    The message names the (last) item."""


# So many items (videos) in a row that give no result within the time allowed: the storage hangs, not one file.
MAX_OVERDUE_IN_A_ROW = 3


def _run_alone(pool: cf.ProcessPoolExecutor | None, fn: Callable, item, on_crash: Callable | None,
               timeout: float = 0, on_timeout: Callable | None = None, describe: Callable[[Any], str] = repr):
    """``fn(item)`` in a one-worker pool (started when ``pool`` is None) -> (the pool, None once it broke; result;
    whether it is an overdue verdict). If the worker dies, the item is convicted: ``on_crash(item, how)`` is its
    result, or WorkerCrashError naming it as ``describe`` does. ``timeout`` > 0: without a result after that many
    seconds, the pool is ended and ``on_timeout(item, how)`` is the result (see :func:`_overdue_verdict`)."""
    pool = pool or started_pool(1)
    try:
        return pool, result_unless_a_worker_dies(pool, submit_to_pool(pool, fn, item), timeout), False
    except cf.process.BrokenProcessPool:
        how = f"the worker process running it died ({exit_description(pool)}), twice, the second time alone"
        abandon_pool(pool)
    except ResultOverdue:
        abandon_pool(pool)
        return None, _overdue_verdict(item, timeout, "twice, the second time alone", on_timeout, describe), True
    if on_crash is None:
        raise WorkerCrashError(f"{describe(item)}: {how}")
    return None, on_crash(item, how), False


def _overdue_verdict(item, timeout: float, when: str, on_timeout: Callable | None,
                     describe: Callable[[Any], str] = repr):
    """``on_timeout(item, how)`` for an item that gave no result within ``timeout`` seconds, or WorkerTimeoutError
    naming it as ``describe`` does."""
    how = f"no result within {timeout:g} s, {when}"
    if on_timeout is None:
        raise WorkerTimeoutError(f"{describe(item)}: {how}")
    return on_timeout(item, how)


def _call_each(fn: Callable, xs: list) -> list:
    return [fn(x) for x in xs]


def _map_surviving_crashes(fn: Callable, items: Sequence, workers: int, on_crash: Callable | None,
                           timeout: float = 0, on_timeout: Callable | None = None,
                           describe: Callable[[Any], str] = repr) -> Iterator[tuple[int, object]]:
    """``(i, fn(items[i]))`` as they finish, in ``workers`` processes, a few items per task (per-task overhead is
    about 0.2 ms, comparable with a probe of a short video). A worker that dies takes only time with it: the items
    in flight then run again, one task each, and one that was in flight at two deaths runs alone
    (:func:`_run_alone`), so a crashing item is found without convicting its neighbours. (multiprocessing.Pool
    replaces a dead worker silently and waits forever for the result it took with it.)

    ``timeout`` > 0: when no task has finished for that many seconds, the pool is stalled and treated like one
    that lost a worker (the items in flight run again, one task each), except that an item in flight alone is
    overdue at once: ``on_timeout(item, how)`` is its result (:func:`_overdue_verdict`). A stalled worker cannot
    be told from a slow one, so the verdict is only as strong as the caller makes it (the index leaves such a video
    out of one build); :data:`MAX_OVERDUE_IN_A_ROW` verdicts in a row raise WorkerTimeoutError. The errors name an
    item as ``describe(item)`` says it."""
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
                f"{describe(items[i])}): what they are read from, or the work itself, does not answer")
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
                    alone, result, overdue = _run_alone(alone, fn, items[task[0]], on_crash, timeout, on_timeout,
                                                               describe)
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
                    yield counted(i, _overdue_verdict(items[i], timeout, "the only item in flight", on_timeout,
                                                      describe), True)
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
                      on_timeout: Callable | None = None, one_worker_pool: bool = False,
                      describe: Callable[[Any], str] = repr) -> Iterator:
    """``fn(x)`` for every item, in ``workers`` processes (0: one per CPU; 1, or one CPU: in this process, unless
    ``one_worker_pool``, in one worker process; never more than there are items), with a progress bar on stderr.
    Yields the results in item order (``ordered``) or as they finish; ``fn`` must be a module-level function (it is
    pickled to the workers) and must not raise for one bad item if the others should go on.

    Without a bar (``progress`` False), ``log`` (when given) gets a plain progress line every ``log_every_s``
    seconds (:class:`~evautil.progress.ProgressLines`); with or without one, it gets a line with the total time
    once every item is done.

    A worker process that dies (a crash in a native library, the out-of-memory killer) stops nothing: its items
    are run again, and an item that kills a worker even when it runs alone gets ``on_crash(item, how)`` as its
    result (run in this process), or raises WorkerCrashError naming it. Workers that cannot start at all raise
    WorkerStartError.

    ``timeout`` > 0 (worker processes only: ``one_worker_pool`` holds one worker to it too): an item that gives no
    result for that many seconds, the second time alone, gets ``on_timeout(item, how)`` as its result, or raises
    WorkerTimeoutError naming it; so many such items in a row raise WorkerTimeoutError (see
    :func:`_map_surviving_crashes`).

    The errors name an item as ``describe(item)`` says it (``repr`` by default): a caller whose items are jobs
    (``(row, path, full_decode)``) names the file plainly, not a tuple with its path's escapes.
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
        if (processes <= 1 and not one_worker_pool) or not items:
            for x in items:
                yield fn(x)
                tick()
        else:
            done: dict[int, object] = {}
            nxt = 0
            for i, r in _map_surviving_crashes(fn, items, n, on_crash, timeout, on_timeout, describe):
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
