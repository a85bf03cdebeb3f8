"""A list matched against its index cache: which rows the cache's records serve as they are, which files are to be
probed and which are missing (:func:`match_list`), and the records an earlier rule wrote that a build does not trust.

The rules of reuse are here once, for a build (``index.build_index``) and for the reader of the caches an earlier
``prepare_kinetics.py lists --check`` wrote (``probed_caches.probed_before``): a record is reused while its file has
the size and mtime it was probed with, was probed at least as thoroughly as now asked, and is not one of a retired
rule's (:func:`retired_rows`) nor a quick probe that may count frames an MP4 edit list hides
(``VideoTable.counted_before_edit_lists``). No DALI import here.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from evautil.progress import counted

from .filelist import VideoList
from .index_store import IndexCache
from .video_table import BAD, UNKNOWN, VideoTable

__all__ = ["CacheMatch", "retired_rows", "trusted_records", "cached_keys", "match_list", "reuse_newer",
           "log_recount", "log_other_root"]

# The index's logger: these lines are the build's, and its users set their handlers and levels there.
logger = logging.getLogger("dali_pipelines.index")

# The wording of a truncation verdict drawn from nominal rate x duration even where the packets carry timestamps
# (before variable-frame-rate videos were judged by time): cached records with it are probed again.
_RETIRED_TRUNCATION = "the duration implies"
# Codec names that were decoders' names (AV1 decoded by libdav1d), not the codec's, in records of good videos: NVDEC
# routing and DATA.NVDEC_CODECS know the codec's name, so such records are probed again.
_RETIRED_CODEC_NAMES = ("libdav1d",)


def _not_found(path: str) -> str:
    """Why a listed file's lookup failed: it is gone, it is a symbolic link whose target is gone (which said only
    "cannot stat file"), or the lookup's own error (a folder it may not enter, a loop of links)."""
    if not os.path.lexists(path):
        return "missing file"
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ENOENT and os.path.islink(path):
            return f"symbolic link to a missing file ({os.readlink(path)})"
        return f"cannot stat file ({e.strerror})"
    return "cannot stat file"  # it came back meanwhile: the next build probes it


@dataclass
class CacheMatch:
    """A list matched against its cache: ``table`` (one row per list row: the reused records, UNKNOWN elsewhere),
    ``bad`` (reasons of reused bad records and of missing files), ``jobs`` (rows to probe), ``unique`` (rows that
    go into the cache: the first of each path; None when every row does), ``current`` (the cache already says
    exactly what this build would write), ``recount`` (the rows whose record, here or in a newer cache that filled
    others (:func:`reuse_newer`), is one whose frame count may include frames that never decode,
    :meth:`~dali_pipelines.video_table.VideoTable.counted_before_edit_lists`) and ``other_root`` (the root the cache
    was written for, when not this build's: ``IndexCache.other_root``)."""

    table: VideoTable
    bad: dict[int, str]
    jobs: np.ndarray
    unique: np.ndarray | None
    current: bool
    recount: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    other_root: str | None = None

    @property
    def recounted(self) -> int:
        """How many rows are probed again for their record's frame count alone (``recount`` rows still in
        ``jobs``: not those a newer cache filled)."""
        return int(np.intersect1d(self.recount, self.jobs).size)


def retired_rows(table: VideoTable) -> np.ndarray:
    """Rows whose record an earlier rule wrote and this code would not: a 'truncated' verdict from the nominal rate
    x duration (it wronged VFR videos), an AV1 video named by its decoder ('libdav1d'), where the routing reads the
    codec's name."""
    return table.rows_with_reason(_RETIRED_TRUNCATION) | table.rows_with_text("codec", _RETIRED_CODEC_NAMES)


def trusted_records(table: VideoTable, full_decode: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(trusted, recount)``: masks of the records reused while their files keep the recorded size and mtime
    (probed at least as thoroughly as ``full_decode`` asks, not :func:`retired_rows`), and of those not reused
    for their frame counts alone (:meth:`~dali_pipelines.video_table.VideoTable.counted_before_edit_lists`)."""
    kept = (table.status != UNKNOWN) & (table.columns["full_decode"] | (not full_decode)) & ~retired_rows(table)
    recount = kept & table.counted_before_edit_lists()
    return kept & ~recount, recount


def _cache_rows(videos: VideoList, cache: IndexCache) -> tuple[np.ndarray | None, np.ndarray | None, bool]:
    """``(src, unique, covered)``: each list row's cache row (-1 where the cache lacks its path; None: row r is
    cache row r), the rows that are first with their path (None: all), and whether every cache row is some list
    row's."""
    if cache.rel_paths == videos.rel_paths:  # the usual case: the list the cache was written for, unchanged
        return None, None, True
    where = cache.rel_paths.positions()
    data, cut, n = videos.rel_paths.blob.tobytes(), videos.rel_paths.offsets.tolist(), len(videos)
    src = np.fromiter((where.get(data[cut[r]:cut[r + 1]], -1) for r in range(n)), np.int64, n)
    covered = len(where) == len(cache.rel_paths) and np.unique(src[src >= 0]).size == len(where)
    del where
    unique = np.zeros(n, bool)
    unique[list(videos.rel_paths.positions().values())] = True
    return src, (None if unique.all() else unique), covered


def cached_keys(videos: VideoList, cache: IndexCache | None,
                 timeout_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`VideoList.stat_keys` as the cache records them: each row's size and mtime where the cache has a
    record of its path, a real ``os.stat`` for the rows it lacks (new rows, files that were missing)."""
    cache = cache or IndexCache.empty()
    src, _, _ = _cache_rows(videos, cache)
    table = cache.table if src is None else cache.table.take(src)
    recorded = table.status != UNKNOWN
    size, mtime, present = videos.stat_keys(np.flatnonzero(~recorded), timeout_s)
    size[recorded] = table.columns["size"][recorded]
    mtime[recorded] = table.columns["mtime_ns"][recorded]
    present[recorded] = True
    return size, mtime, present


def match_list(videos: VideoList, keys: tuple[np.ndarray, np.ndarray, np.ndarray], cache: IndexCache | None,
               full_decode: bool) -> CacheMatch:
    """Reuse the cache's record of every row whose file has the cached size and mtime and was probed at least as
    thoroughly, under whatever root the cache was written for (bad verdicts too); the other files present are to be
    probed, missing ones are bad at once. A cache of another root is never current: it is saved for this one."""
    cache = cache or IndexCache.empty()
    src, unique, covered = _cache_rows(videos, cache)
    table = cache.table if src is None else cache.table.take(src)
    size, mtime, present = keys
    c = table.columns
    recorded = table.status != UNKNOWN
    trusted, recount = trusted_records(table, full_decode)
    # A file is known by its size and mtime, not its inode or ctime: a copy made with rsync -a or cp -p (a dataset
    # copied to another machine with its cache) keeps both and is the same video, while its inode and ctime are new.
    # So a file replaced by another of the same size with its mtime set back (touch -r) is taken for the one probed:
    # nothing short of reading every file again would tell them apart.
    same_file = present & (c["size"] == size) & (c["mtime_ns"] == mtime)
    recount &= same_file
    reusable = trusted & same_file
    stale = recorded & ~reusable
    table.clear(np.flatnonzero(stale))
    bad = {int(r): table.reason(r) for r in np.flatnonzero(table.status == BAD)}
    for r in np.flatnonzero(~present).tolist():
        bad[r] = _not_found(videos.path(r))
    jobs = np.flatnonzero(present & ~reusable)
    return CacheMatch(table, bad, jobs, unique, current=not cache.migrated and cache.other_root is None and covered
                      and not jobs.size and not stale.any(), recount=np.flatnonzero(recount),
                      other_root=cache.other_root)


def reuse_newer(match: CacheMatch, videos: VideoList, keys: tuple[np.ndarray, np.ndarray, np.ndarray],
                newer: IndexCache, full_decode: bool) -> int:
    """Fill the rows ``match`` has yet to probe from the records of ``newer`` (the cache beside the list, written
    after this one) by the same rule as :func:`match_list`; the rows ``match`` already reuses keep their records
    (a user's own verdicts stay). Returns how many rows it filled."""
    other = match_list(videos, keys, newer, full_decode)
    fill = match.jobs[other.table.status[match.jobs] != UNKNOWN]
    if fill.size:
        n = len(match.table)
        both = VideoTable.concat([match.table, other.table])  # one set of string tables for the two
        rows = np.arange(n)
        rows[fill] = n + fill
        match.table = both.take(rows)
        match.bad.update({int(r): other.bad[int(r)] for r in fill if int(r) in other.bad})
        match.jobs = np.setdiff1d(match.jobs, fill)
        match.current = False
    match.recount = np.union1d(match.recount, other.recount)  # (those it filled are no jobs: not counted)
    return int(fill.size)


def log_recount(cache_path: str, rows: int) -> None:
    """Say why ``rows`` records of ``cache_path`` are probed again (nothing when there are none)."""
    if rows:
        logger.info("index cache %s: probing %s again, quick probes recorded before schema version 4 whose "
                    "frame counts may include the frames an MP4 edit list hides or that precede a stream's first "
                    "keyframe, which never decode", cache_path, counted(rows, "video"))


def log_other_root(cache_path: str, match: CacheMatch, root: str) -> None:
    """Say that ``cache_path``, written for another root, served this build's ``root`` (nothing when it was written
    for this one): how many list rows its records served, how many are to be probed."""
    if match.other_root is not None:
        reused = int(np.count_nonzero(match.table.status != UNKNOWN))
        logger.info("index cache %s of root %s reused for root %s: %s reused (files with the recorded size "
                    "and mtime), %s to probe", cache_path, match.other_root, root, counted(reused, "list row"),
                    f"{match.jobs.size:,}")
