"""What every Kinetics preparation step shares: its error type and a process pool with a progress bar."""

from __future__ import annotations

import multiprocessing as mp
from typing import Callable, Sequence

__all__ = ["KineticsError", "parallel_map"]


class KineticsError(ValueError):
    """Bad input for dataset preparation (missing root, empty class, unreadable file, ...); the message names it."""


def parallel_map(fn: Callable, items: Sequence, workers: int, desc: str, progress: bool) -> list:
    """``[fn(x) for x in items]``, in ``workers`` processes when workers > 1, with an optional progress bar.

    ``fn`` must be a module-level function (it is sent to spawned processes by name).
    """
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc=desc, unit="file", disable=not progress or not items, dynamic_ncols=True)
    try:
        if workers <= 1 or len(items) <= 1:
            out = []
            for x in items:
                out.append(fn(x))
                bar.update()
            return out
        # spawn: FFmpeg/x264 keep internal threads; forking a process that holds them is not safe.
        with mp.get_context("spawn").Pool(min(workers, len(items))) as pool:
            out = [None] * len(items)
            # Small chunks keep slow items (encodes) balanced; larger ones cut IPC for many quick probes.
            chunk = max(1, min(32, len(items) // (workers * 16)))
            for i, r in pool.imap_unordered(_indexed_call, [(fn, i, x) for i, x in enumerate(items)], chunk):
                out[i] = r
                bar.update()
            return out
    finally:
        bar.close()


def _indexed_call(args: tuple) -> tuple:
    fn, i, x = args
    return i, fn(x)
