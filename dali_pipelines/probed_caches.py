"""The index caches made outside a build: written by ``prepare_kinetics.py lists --check`` from its own probe of
the listed videos (:func:`save_probed_index`), so that the first build of each list probes none of them, and read
back by the next check into the same folder (:func:`probed_before`), so that it probes only the videos that are new
or changed since.

The file, its place, its lock and its format are the build's (``index_files``, ``index_lock``, ``index_store``),
and so are the rules of which records are trusted (``cache_match``). ``index`` re-exports these names. No DALI
import here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .cache_match import log_recount, trusted_records
from .filelist import PathTable
from .index_files import index_paths
from .index_lock import locked
from .index_store import load_cache_and_root, same_root, save_cache, stat_key
from .video_table import GOOD, VideoTable

__all__ = ["save_probed_index", "ProbedBefore", "probed_before"]


def save_probed_index(list_path: str, root: str, rel_paths: Sequence[str], table: VideoTable) -> str:
    """Write the index cache of a list whose videos have just been probed (``index.probe_videos``), so that the
    first ``index.build_index`` of the list probes none of them: row ``r`` of ``table`` is the video
    ``rel_paths[r]`` (relative to ``root``, as the list's lines say). The file, its lock and its format are
    the build's (the first row of a repeated path, as a build saves it), and so is its validity: a row
    is reused only while its file keeps the size and mtime the probe recorded. A quarantine file or version 2
    cache left beside the list by an earlier list of that name is removed (the build writes the
    quarantine file again if rows are bad). Returns the cache's path."""
    if len(rel_paths) != len(table):
        raise ValueError(f"{len(table)} probed rows for {len(rel_paths)} paths")
    first: dict[str, int] = {}
    for row, rel in enumerate(rel_paths):
        first.setdefault(rel, row)
    if len(first) < len(table):
        table = table.take(np.fromiter(first.values(), np.int64, len(first)))
    paths = index_paths(list_path)
    with locked(paths.lock):
        save_cache(paths.cache, os.path.abspath(list_path), os.path.abspath(root), PathTable.from_paths(first), table)
        for stale in (paths.quarantine, paths.json_cache):
            if os.path.exists(stale):
                os.unlink(stale)
    return paths.cache


@dataclass
class ProbedBefore:
    """The good videos of earlier index caches: ``rows`` maps a video's absolute path, as the cache names it (under
    the root it was written for, and under the one it is read for now), to its row of ``table``."""

    rows: dict[str, int]
    table: VideoTable
    _by_folder: dict[tuple[str, str], int] | None = field(default=None, repr=False)
    _real_folders: dict[str, str] = field(default_factory=dict, repr=False)

    def _real_folder(self, folder: str) -> str:
        real = self._real_folders.get(folder)
        if real is None:
            real = self._real_folders[folder] = os.path.realpath(folder)
        return real

    def _row(self, path: str) -> int:
        """The row recording ``path``, also when the earlier check or this one reached its folder through a
        symbolic link (the dataset root given as a link to the folder, or the other way round); -1 if none."""
        row = self.rows.get(path, -1)
        if row >= 0:
            return row
        # Folders are resolved once each, not videos: a few thousand class folders hold Kinetics' 650,000 videos.
        # A copy of the tree elsewhere has other real folders: only its paths under the root now (probed_before's
        # roots) name it.
        if self._by_folder is None:
            self._by_folder = {}
            for recorded, r in self.rows.items():
                folder, name = os.path.split(recorded)
                self._by_folder.setdefault((self._real_folder(folder), name), r)
        folder, name = os.path.split(path)
        return self._by_folder.get((self._real_folder(folder), name), -1)

    def unchanged_row(self, path: str) -> int:
        """The row recording ``path`` when the file still has the size and mtime it was probed with, else -1 (the
        same rule as a build's reuse of its cache)."""
        row = self._row(path)
        if row < 0:
            return -1
        c = self.table.columns
        return row if stat_key(path) == (int(c["size"][row]), int(c["mtime_ns"][row])) else -1


def probed_before(cache_paths: Sequence[str], roots: Mapping[str, str] | None = None) -> ProbedBefore:
    """The good rows of the index caches ``cache_paths`` (whatever lists and roots they were written for; an
    unreadable one or one of another schema version is skipped), so that a new ``lists --check`` over the same
    videos probes only those that are new or changed since, and those whose record a build would not trust
    (:func:`~dali_pipelines.cache_match.trusted_records`). ``roots``: the root each cache's paths lie under now
    (``roots[cache_path]``), when that may be another than the one it was written for: as a build reads a cache of
    another root, its records serve the files of the same relative paths under this one that keep the recorded
    size and mtime (a dataset moved or copied with ``cp -p``), besides the files under the recorded root."""
    rows: dict[str, int] = {}
    tables: list[VideoTable] = []
    start = 0
    for cache_path in cache_paths:
        found = load_cache_and_root(cache_path)
        if found is None:
            continue
        recorded, cache = found
        trusted, recount = trusted_records(cache.table, full_decode=False)
        log_recount(cache_path, int(np.count_nonzero(recount)))
        now = (roots or {}).get(cache_path, recorded)
        under = [recorded] if same_root(recorded, now) else [recorded, now]
        for r in np.flatnonzero(trusted & (cache.table.status == GOOD)).tolist():
            for root in under:
                # absolute and normalised as a scan names its videos (a list under --out of a dataset beside it
                # holds paths that start with "..")
                rows.setdefault(os.path.abspath(os.path.join(root, cache.rel_paths[r])), start + r)
        tables.append(cache.table)
        start += len(cache.table)
    return ProbedBefore(rows, VideoTable.concat(tables))
