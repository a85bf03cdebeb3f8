"""Worker processes: one way to start them and one map with a progress bar.

Start method: ``forkserver`` (``spawn`` where it does not exist), never ``fork``. A forked child inherits the
parent's threads' locks and objects without their threads: a process that holds DALI pipelines, CUDA or FFmpeg
threads can deadlock in the child (a DALI pipeline's destructor run by the child's garbage collector waits for
threads that exist only in the parent). Workers started from a fresh server process import only what their job
needs (PyAV, numpy). Scripts that start workers need the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
from typing import Callable, Iterator, Sequence

__all__ = ["START_METHOD", "mp_context", "process_pool", "InlineExecutor", "map_with_progress"]

START_METHOD = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def mp_context(method: str = START_METHOD) -> mp.context.BaseContext:
    if method not in ("forkserver", "spawn"):
        raise ValueError(f"worker start method must be 'forkserver' or 'spawn' (never 'fork'), got {method!r}")
    return mp.get_context(method if method in mp.get_all_start_methods() else "spawn")


def process_pool(workers: int, method: str = START_METHOD) -> cf.ProcessPoolExecutor:
    """A process pool of ``workers`` processes started with ``method``."""
    return cf.ProcessPoolExecutor(max(1, int(workers)), mp_context=mp_context(method))


class InlineExecutor(cf.Executor):
    """Runs submissions immediately in the calling thread (0 workers), delivering results through futures."""

    def submit(self, fn, /, *args, **kwargs):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - delivered through the future like a real executor
            fut.set_exception(e)
        return fut


def _indexed_call(args: tuple) -> tuple:
    fn, i, x = args
    return i, fn(x)


def map_with_progress(fn: Callable, items: Sequence, workers: int, desc: str, progress: bool = True,
                      unit: str = "item", ordered: bool = True) -> Iterator:
    """``fn(x)`` for every item, in ``workers`` processes (0: one per CPU; 1: in this process), with a progress
    bar on stderr. Yields the results in item order (``ordered``) or as they finish; ``fn`` must be a module-level
    function (it is pickled to the workers) and must not raise for one bad item if the others should go on."""
    from tqdm import tqdm

    n = min(workers if workers > 0 else (os.cpu_count() or 1), len(items))
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress or not items, file=sys.stderr,
               dynamic_ncols=True)
    try:
        if n <= 1:
            for x in items:
                yield fn(x)
                bar.update()
            return
        with mp_context().Pool(n) as pool:
            # Small chunks keep the bar moving and balance long and short items.
            chunk = max(1, min(16, len(items) // (8 * n)))
            done: dict[int, object] = {}
            nxt = 0
            for i, r in pool.imap_unordered(_indexed_call, [(fn, i, x) for i, x in enumerate(items)], chunk):
                bar.update()
                if not ordered:
                    yield r
                    continue
                done[i] = r
                while nxt in done:
                    yield done.pop(nxt)
                    nxt += 1
    finally:
        bar.close()
