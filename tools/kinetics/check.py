"""``--check`` of a scan: every usable video probed as the training index probes it, its facts kept for the
lists' index caches, and what was probed saved when the check stops (``scan.scan_dataset`` calls it)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from evautil.progress import stderr_line
from evautil.workers import WorkerTimeoutError

from .common import KineticsError

if TYPE_CHECKING:
    from dali_pipelines.index import ProbedBefore
    from dali_pipelines.video_table import VideoTable

    from .scan import Video

__all__ = ["check_videos", "save_checked"]


def _save_probed_so_far(name: str, root: str, candidates: list[tuple[str, Video]], table: "VideoTable",
                        partial_list: str, quiet: bool = False) -> None:
    """An interrupted ``--check``: the good rows probed (or reused) so far go to the index cache of
    ``partial_list``, where the next check into the same ``--out`` finds them (``probed_before``)."""
    from dali_pipelines.video_table import GOOD

    rows = np.flatnonzero(table.status == GOOD).tolist()
    save_checked(name, root, table.take(np.asarray(rows, np.int64)), {candidates[r][1].path: i
                                                                       for i, r in enumerate(rows)}, partial_list,
                 quiet)


def save_checked(name: str, root: str, probes: "VideoTable | None", probe_rows: Mapping[str, int],
                 partial_list: str, quiet: bool = False) -> None:
    """The usable videos a ``--check`` of dataset ``name`` probed (row ``probe_rows[path]`` of ``probes``) to
    ``partial_list``'s index cache, where the next check into the same ``--out`` finds them: for a command
    stopped, or failed, before it wrote the lists whose caches would have kept them, and while it probes (then
    ``quiet``: no line says so)."""
    if probes is None or not len(probes):
        return
    from dali_pipelines.index import index_paths, save_probed_index

    rel = [os.path.relpath(p, root) for p, _ in sorted(probe_rows.items(), key=lambda x: x[1])]
    # --out made first: without it the cache went to the user's cache folder, where no later check looks
    os.makedirs(os.path.dirname(os.path.abspath(partial_list)), exist_ok=True)
    path = save_probed_index(partial_list, root, rel, probes)
    # No list of this name is ever built, so nothing else takes its lock, and each save is an atomic write: the
    # lock file, left beside the saved probes, outlived the check that stopped.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(index_paths(partial_list).lock)
    if not quiet:
        stderr_line(f"check {name}: saved the {len(rel):,} usable videos probed so far in {path}")


def check_videos(name: str, candidates: list[tuple[str, Video]], workers: int, progress: bool,
                  before: "ProbedBefore | None" = None, root: str = "",
                  partial_list: str | None = None, lines: bool = True) -> tuple["VideoTable", list[str | None]]:
    """``--check``: probe every candidate with the training index's own probe; returns a table with the facts of
    the good ones (row i: ``candidates[i]``, UNKNOWN where bad) and each candidate's reason to be skipped (None:
    good).

    The index's probe decodes the first frame, as the check did on its own before, and also reads what the index
    keeps (frame count, size, codec, decoder facts) and finds truncated streams, which the index would quarantine:
    one pass gives both the check's verdict and the rows of the lists' index caches, so that the first training
    run (or verify_data) probes none of the videos again. A video that ``before`` (the caches an earlier check
    wrote) records with its current size and mtime is not probed again: its recorded facts are kept. A check
    stopped by Ctrl-C or a stop signal first saves what it probed in ``partial_list``'s index cache, and so does
    a check every minute or so while it probes, as an index build does (``index._SAVE_EVERY_S``): a check killed
    outright (SIGKILL, the out-of-memory killer, a node lost) kept none of its hours of probes. A probe that gives
    no answer within ``index.PROBE_TIMEOUT_S`` is a skipped video, with one worker too (a worker process then).
    Without a bar (``progress``), a plain progress line goes to stderr every 30 s, unless ``lines`` is False
    (--no-progress)."""
    from dali_pipelines import index  # local: scanning without --check must not need PyAV
    from dali_pipelines.video_table import VideoInfo, VideoTable

    if before is not None and before.rows:
        src = np.fromiter((before.unchanged_row(v.path) for _, v in candidates), np.int64, len(candidates))
        table = before.table.take(src)
        reused = int(np.count_nonzero(src >= 0))
        stderr_line(f"check {name}: {reused:,} of {len(candidates):,} videos unchanged since the index caches an "
                    f"earlier check wrote; probing {len(candidates) - reused:,}")
    else:
        src, table = np.full(len(candidates), -1, np.int64), VideoTable.empty(len(candidates))
    reasons: list[str | None] = [None] * len(candidates)
    jobs = [(i, v.path, False) for i, (_, v) in enumerate(candidates) if src[i] < 0]
    limit = index.PROBE_TIMEOUT_S
    # one worker with a limit is a worker process too: in this process a probe that never ends held the check
    probes = index.probe_videos(jobs, max(1, workers), progress, f"check {name}", log=stderr_line if lines else None,
                                timeout_s=limit, one_worker_pool=limit > 0)
    done, next_save = 0, time.monotonic() + index._SAVE_EVERY_S
    try:
        for row, info, reason in probes:
            if info is None:
                reasons[row] = reason or "unreadable"
            else:
                table.set_good(row, VideoInfo.from_record(info), False)
            done += 1
            if partial_list is not None and time.monotonic() >= next_save and done < len(jobs):
                t0 = time.monotonic()
                try:
                    _save_probed_so_far(name, root, candidates, table, partial_list, quiet=True)
                except OSError as e:  # a full disk need not end the check (the last save may still fail)
                    stderr_line(f"warning: check {name}: could not save the videos probed so far: {e}")
                took = time.monotonic() - t0  # saves take a small share of the time, on a slow file system too
                next_save = time.monotonic() + max(index._SAVE_EVERY_S, took / index._SAVE_SHARE)
    except WorkerTimeoutError as e:  # every file hangs: the storage, not the videos; nothing is written
        raise KineticsError(f"dataset {name}: --check stopped: {e}") from e
    except BaseException:  # Ctrl-C or a stop signal (evautil.interrupt.Stopped): keep what was probed
        probes.close()  # ends the workers first
        if partial_list is not None:
            _save_probed_so_far(name, root, candidates, table, partial_list)
        raise
    return table, reasons
