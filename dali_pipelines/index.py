"""Dataset index: per-video frame count, codec, size and fps, plus quarantine of unreadable videos.

DALI's ``fn.decoders.video`` needs frame indices before it decodes, and nothing in a DALI graph can tell how many
frames a file has, so the counts are measured once, ahead of time, here. The same pass finds videos that would
crash or silently corrupt a DALI pipeline (a garbage file invalidates the whole pipeline; a truncated one decodes
silently into zero frames), so they can be left out instead.

The index is built automatically the first time a list is used and cached beside it as ``<list>.index.npz`` (or in a
per-user cache directory when the list's directory is read-only; the format is described in ``index_store.py``).
Each cached video is keyed by (relative path, size, mtime_ns): a changed or replaced video is probed again, the
others are reused, wherever they now stand in the list. A file lock (``index_lock.py``) makes several processes that
start at once (torchrun ranks) probe only once, and lets them read a finished index at the same time. The process
that probes reports its progress (a bar on a terminal, else a log line every half minute) and saves what it has
probed every minute and when it is interrupted: the next build probes only the videos left. A list written by
``tools/prepare_kinetics.py lists --check`` comes with its cache already written (:func:`save_probed_index`, from
the rows of the same probe, :func:`probe_videos`), so that its first build probes nothing. The verdict on one video
is ``probe_verdict.py``'s, where the files lie ``index_files.py``'s, which cached records a build reuses
``cache_match.py``'s, and the caches written and read outside a build ``probed_caches.py``'s; this module
re-exports their public names.

The index of a Kinetics-size list is held by every rank, so it is kept as columns (the list's
:class:`~dali_pipelines.filelist.VideoList` and an :class:`~dali_pipelines.video_table.VideoTable` of the probed
facts), not as Python objects per video; ``ListEntry`` and ``VideoInfo`` objects are built on demand for one row.

The cache file carries the schema version (:data:`INDEX_SCHEMA_VERSION`); a file written by another version is
ignored and every video probed again, never read with the wrong meaning, except a version 2 JSON cache, whose
records are migrated. Version 2 added the decoder facts (coded size, pixel format, chroma format, bit depth,
profile) and each video's size and mtime; version 3 stores the same fields as columns; version 4 adds the stream's
YUV matrix tag (``colour.py``); version 5 is version 4 whose bad verdicts are this code's checks'; version 6 adds
whether NVDEC would number the frames otherwise (``pyav_probe.first_pictures_not_shown``'s verdict, from the same
demux: such a video is routed off NVDEC at start-up); version 7 is version 6 whose good AVI records passed the
header's chunk count (an AVI cut short was taken for a shorter good video); version 8 adds the display turn of the
frame the probe decodes (``predict`` notes a turned video from it). A version 7 cache is migrated, its records kept
without that turn (-1: ``predict`` reads it from the video). A version 3, 4, 5 or 6 cache is migrated
too, its good AVI records dropped as it is read (nothing but the path's extension tells an AVI apart, so only those
videos are probed again), its other good records kept, a version 3, 4 or 5 one's without that verdict ('': NVDEC's
route checks those videos at their first read), a version 3 one's without
the tag ('') too: a full decode of a Kinetics-size list again would cost more than the tag is worth, so such a
video's DALI-decoded frames stay BT.601.
Its quick probes without a tag are probed again all the same (``VideoTable.counted_before_edit_lists``): most were
taken before the frames an MP4 edit list hides and those before a stream's first keyframe were left out of the
count, and nothing in a record tells such a video apart. Every good row this code records has a tag ('unknown' at
least), so no cache it wrote is probed again for this. An older cache's bad verdicts are dropped as it is read
(``index_store._CHECKS_SINCE``): checks have changed since (an edit-list MP4 was called truncated), and nothing in
a verdict tells which check gave it, so those videos, and only those, are probed again. An older cache's full
decodes are kept although a full decode now also refuses a picture size that changes within the stream: no record
tells such a video apart, and the decode routes quarantine it at its first sample.

No DALI import here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import asdict
from typing import Callable, Iterator

import numpy as np

from evautil.files import atomic_write
from evautil.progress import LINE_EVERY_S, counted
from evautil.workers import WorkerTimeoutError, map_with_progress

from .cache_match import CacheMatch, cached_keys, log_other_root, log_recount, match_list, reuse_newer
from .dataset_index import BAD_VIDEOS_NAMED, QUARANTINE_ENCODING, DatasetIndex, quarantine_line
from .filelist import DataError, VideoList, check_list_root, read_video_list
from .index_files import IndexPaths, index_paths
from .index_lock import locked
from .index_store import INDEX_SCHEMA_VERSION, load_cache, save_cache
from .probe_verdict import probe_video
from .probed_caches import ProbedBefore, probed_before, save_probed_index
from .pyav_open import BadVideoError
from .video_table import UNKNOWN, VideoInfo

__all__ = ["VideoInfo", "BadVideoError", "DataError", "probe_video", "DatasetIndex", "build_index", "index_paths",
           "IndexPaths", "INDEX_SCHEMA_VERSION", "probe_videos", "save_probed_index", "ProbedBefore",
           "probed_before", "progress_lines_on_stderr", "PROBE_TIMEOUT_S", "PROBE_OVERDUE"]

logger = logging.getLogger(__name__)

# Bad files named in the DATA.STRICT error message itself (the quarantine file lists them all).
_STRICT_NAMED = 10
# Every progress line of a build (the start, the periodic and the final one) begins with this.
PROGRESS_PREFIX = "indexing "
# The longest a probe may take before its video is left out of the build (DATA.VIDEO_TIMEOUT_S's default; 0: wait
# for ever). A stat-able file whose read never returns (a hung network file system, a named pipe) stops no build.
PROBE_TIMEOUT_S = 300.0
# The start of the reason of a video left out because its probe did not answer in time: a verdict of one build,
# never cached (a file system that stopped answering would otherwise have its videos marked bad for good).
PROBE_OVERDUE = "no answer while probing"
# Without a progress bar, a plain progress line is logged this often while probing.
_LOG_EVERY_S = LINE_EVERY_S
# While probing, the cache is saved this often, so that a build that is killed (preemption, the time limit) leaves
# what it probed to the next one ...
_SAVE_EVERY_S = 60.0
# ... but saves take at most this share of the time (a 650,000-row cache, 77 MB, takes 0.1 to 0.2 s to save to a
# local disk; it may take seconds on a slow shared file system).
_SAVE_SHARE = 0.02


def _probe_job(job: tuple[int, str, bool]) -> tuple[int, dict | None, str | None]:
    """Worker: probe one video -> (row, VideoInfo as dict or None, bad reason or None). Never raises."""
    row, path, full_decode = job
    try:
        return row, asdict(probe_video(path, full_decode=full_decode)), None
    except BadVideoError as e:
        return row, None, str(e) or "unreadable"
    except Exception as e:  # an unexpected library failure on one file must not stop indexing the others
        return row, None, f"probe failed: {type(e).__name__}: {e}"


def _probe_crashed(job: tuple[int, str, bool], how: str) -> tuple[int, None, str]:
    """The result of a probe that killed its worker process (a crash in FFmpeg on a damaged file): a bad video."""
    return job[0], None, f"probing it crashed the process: {how}"


def _probe_overdue(job: tuple[int, str, bool], how: str) -> tuple[int, None, str]:
    """The result of a probe that did not answer in time (twice): a video left out of this build only."""
    return job[0], None, f"{PROBE_OVERDUE} ({how}): a file system that stopped answering, or a probe that never ends"


def probe_videos(jobs: list[tuple[int, str, bool]], workers: int, progress: bool, desc: str,
                 log: Callable[[str], None] = logger.info,
                 timeout_s: float | None = None,
                 one_worker_pool: bool = False) -> Iterator[tuple[int, dict | None, str | None]]:
    """The index's probe (:func:`probe_video`) of every ``(row, path, full_decode)`` job in ``workers`` processes,
    yielding ``(row, VideoInfo as dict or None, bad reason or None)`` as they finish; a video whose probe crashes
    its worker is bad, one that gives no answer within ``timeout_s`` seconds (None: :data:`PROBE_TIMEOUT_S`; twice,
    see ``evautil.workers.map_with_progress``; 0: no limit) has a reason starting with :data:`PROBE_OVERDUE`, and
    :data:`~evautil.workers.MAX_OVERDUE_IN_A_ROW` such videos in a row raise WorkerTimeoutError. One worker (or
    one usable core) with a limit is one worker process, held to it; with none it probes in this process (where a
    probe that crashes ends the caller), unless ``one_worker_pool``. Also what ``prepare_kinetics.py lists
    --check`` runs, so that its verdicts and the facts it caches (:func:`save_probed_index`) are the index's own.
    Progress: a bar, or plain lines to ``log``."""
    timeout_s = PROBE_TIMEOUT_S if timeout_s is None else timeout_s
    # The job function is looked up here, at call time, so a replaced _probe_job is the one that runs; in this
    # process a probe that never ends (a hung file system) held the build, and training's start, for ever.
    return map_with_progress(_probe_job, jobs, workers, desc, progress=progress, unit="video", ordered=False,
                             on_crash=_probe_crashed, log=log, log_every_s=_LOG_EVERY_S, timeout=timeout_s,
                             on_timeout=_probe_overdue, one_worker_pool=one_worker_pool or timeout_s > 0,
                             describe=_probed_path)


def _probed_path(job: tuple[int, str, bool]) -> str:
    """A probe job as the errors name it: its video's path, as the file system spells it (a job's tuple, shown as
    Python writes it, escaped a name that is not UTF-8: ``caf\\udce9``)."""
    return job[1]


def _probe_and_save(match: CacheMatch, videos: VideoList, keys, full_decode: bool, workers: int, progress: bool,
                    paths: IndexPaths, timeout_s: float, save_on_stop: bool = True) -> int:
    """Probe the rows of ``match.jobs`` into ``match.table`` / ``match.bad`` and save the cache when it changed;
    the number of files probed (a file named on several lines is probed once);
    also every :data:`_SAVE_EVERY_S` while probing and when probing stops on an exception (Ctrl-C, SystemExit),
    with the rows not probed yet left UNKNOWN, so that the next build probes only those (unless
    ``save_on_stop`` is False, see :func:`build_index`). A row whose probe did
    not answer in time is bad for this build only: UNKNOWN in the cache too."""
    save = _saver(match, videos, paths) if match.jobs.size or not match.current else None
    jobs: list[tuple[int, str, bool]] = []
    if match.jobs.size:
        desc = f"{PROGRESS_PREFIX}{os.path.basename(videos.list_path)}"
        known = int(np.count_nonzero(match.table.status != UNKNOWN))
        log_recount(paths.cache, match.recounted)
        jobs, repeats = _probe_jobs(videos, match.jobs, full_decode)
        cached = f" ({known:,} known from the cache)" if known else ""
        if len(jobs) == match.jobs.size:
            logger.info("%s: probing %s of %s%s", desc, f"{len(jobs):,}", counted(len(videos), "video"), cached)
        else:  # a file named on several lines is probed once: the count the progress lines go on with is files
            logger.info("%s: probing %s, named on %s of the list's %s%s", desc, counted(len(jobs), "video"),
                        f"{match.jobs.size:,}", counted(len(videos), "line"), cached)
        results = probe_videos(jobs, workers, progress, desc, timeout_s=timeout_s)
        done = saved = 0
        next_save = time.monotonic() + _SAVE_EVERY_S
        try:
            for first, info, reason in results:
                overdue = info is None and reason and reason.startswith(PROBE_OVERDUE)
                for row in (first, *repeats.get(first, ())):
                    if info is not None:
                        match.table.set_good(row, VideoInfo.from_record(info), full_decode)
                    elif overdue:  # not cached: UNKNOWN, probed again next time
                        match.bad[row] = f"{reason}; left out of this build only, the next one probes it again"
                    else:
                        match.bad[row] = reason or "unreadable"
                        match.table.set_bad(row, match.bad[row], int(keys[0][row]), int(keys[1][row]), full_decode)
                if overdue:
                    continue
                done += 1
                if time.monotonic() >= next_save and done < len(jobs):
                    try:
                        took, saved = save(), done
                    except OSError as e:  # a full disk need not end the build (the last save may still fail)
                        logger.warning("%s: could not save the videos probed so far: %s", desc, e)
                        took = 0.0
                    next_save = time.monotonic() + max(_SAVE_EVERY_S, took / _SAVE_SHARE)
        except BaseException:
            results.close()  # the workers end first
            if save_on_stop and done > saved:
                _save_interrupted(save, desc, done, len(jobs), paths.cache)
            raise
    if save is not None:
        save()
    if os.path.exists(paths.json_cache):
        os.unlink(paths.json_cache)  # a version 2 cache, migrated into the one just written (or outdated)
    return len(jobs)


def _probe_jobs(videos: VideoList, rows: np.ndarray,
                full_decode: bool) -> tuple[list[tuple[int, str, bool]], dict[int, list[int]]]:
    """The probes of ``rows``: one per file, on its first row (a list that repeats a video, e.g. to draw a rare
    class more often, had it probed once per line), and ``{first row: the other rows of its file}``."""
    jobs, repeats, first_of = [], {}, {}
    for r in rows.tolist():
        first = first_of.setdefault(videos.file_key(r), r)  # 'a/./b.mp4' is 'a/b.mp4': one probe
        if first == r:
            jobs.append((r, videos.path(r), full_decode))
        else:
            repeats.setdefault(first, []).append(r)
    return jobs, repeats


def _saver(match: CacheMatch, videos: VideoList, paths: IndexPaths) -> Callable[[], float]:
    """A function that saves ``match.table`` as the list's cache (the first row of each path) and returns the
    seconds it took; the paths are selected once for all the saves of a build."""
    rel_paths, rows = videos.rel_paths, None
    if match.unique is not None:
        rows = np.flatnonzero(match.unique)
        rel_paths = rel_paths.select(rows)
    list_path, root = os.path.abspath(videos.list_path), os.path.abspath(videos.root)

    def save() -> float:
        t0 = time.perf_counter()
        save_cache(paths.cache, list_path, root, rel_paths, match.table if rows is None else match.table.take(rows))
        return time.perf_counter() - t0

    return save


def _save_interrupted(save: Callable[[], float], desc: str, done: int, total: int, cache: str) -> None:
    """Save the rows probed before an interruption (a failed save only warns: the interruption goes on)."""
    try:
        save()
    except Exception as e:  # noqa: BLE001 - the exception being raised matters more than this save
        logger.warning("%s: stopped after %s of %s videos, and saving them failed: %s", desc, f"{done:,}",
                       f"{total:,}", e)
        return
    logger.warning("%s: stopped after %s of %s videos; they are saved in %s, the next build probes the other %s",
                   desc, f"{done:,}", f"{total:,}", cache, f"{total - done:,}")


def _quarantine_text(videos: VideoList, bad: dict[int, str]) -> str:
    """The quarantine file's lines: each bad video once (a list may name it on several rows), in list order."""
    lines: dict[str, str] = {}
    for r, why in sorted(bad.items()):
        lines.setdefault(videos.rel_path(r), why)
    return "".join(quarantine_line(rel, why) for rel, why in lines.items())


def _quarantine_is(path: str, text: str) -> bool:
    """Whether the quarantine file says exactly ``text`` (absent when there is nothing to say)."""
    try:
        with open(path, **QUARANTINE_ENCODING) as f:
            return f.read() == text
    except FileNotFoundError:
        return text == ""


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (a replaced stream included), as Python's own
    last-resort handler does."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@contextlib.contextmanager
def progress_lines_on_stderr(warnings: bool = False) -> Iterator[None]:
    """While inside, the index build's plain progress lines go to stderr, and with ``warnings`` its warnings (the
    bad videos) too, nothing else: for commands that attach no logging handler of their own, whose users would
    otherwise see nothing of a long build without a terminal."""
    handler = _StderrHandler()
    handler.addFilter(lambda r: (r.levelno == logging.INFO and r.getMessage().startswith(PROGRESS_PREFIX))
                      or (warnings and r.levelno >= logging.WARNING))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def build_index(list_path: str, root: str, num_classes: int | None = None, *, workers: int = 0,
                full_decode: bool = False, strict: bool = False, progress: bool = True,
                checked_by_peer: bool = False, timeout_s: float | None = None,
                root_name: str | None = "DATA.ROOT", classes_name: str = "num_classes",
                save_on_stop: bool = True) -> DatasetIndex:
    """Read a video list and probe every video (or reuse the cached results).

    Args:
        list_path: ``<relative path> <label>`` list (see :func:`read_video_list`).
        root: directory the list's paths are relative to.
        num_classes: when given, labels must lie in ``[0, num_classes)``.
        workers: probing processes; 0 = one per usable CPU core (``evautil.workers.usable_cpus``).
        full_decode: decode every frame (slow, catches mid-stream corruption); cached results from a full decode
            also satisfy later quick builds, not the other way round.
        strict: raise instead of leaving bad videos out (``DATA.STRICT``).
        progress: show a progress bar while probing; without one, a plain progress line is logged every
            :data:`_LOG_EVERY_S` (for a log file). Either way the process that probes saves its results every
            :data:`_SAVE_EVERY_S` and when interrupted, so that the next build probes only the videos left.
        checked_by_peer: another process of this machine has just built this index, checking every listed file
            against the cache (the first rank of a node, see ``wiring.build_indexes``): the size and mtime the
            cache records for a row are taken as its file's, and only the rows it lacks are stat'ed. Spares a
            network file system one stat per listed video per rank.
        timeout_s: the longest one video's probe may take (``DATA.VIDEO_TIMEOUT_S``; None: :data:`PROBE_TIMEOUT_S`;
            0: no limit, and ``workers`` 1 probes in this process): a video whose probe gives no answer in time,
            twice, is left out of this build only (bad, not cached; see :func:`probe_videos`). Looking up the
            listed files (``os.stat``) that gives no answer for that long is a DataError.
        root_name: how a list none of whose files exists names the root it is refused for (a wrong root, see
            :func:`~dali_pipelines.filelist.check_list_root`), e.g. a tool's ``--root``; None: such a list is
            indexed, every video missing (the inference tools' inputs, whose files are each reported).
        classes_name: what set ``num_classes`` (e.g. ``DATA.NUM_CLASSES``, a tool's ``--num-classes``), named with
            a label outside it (see :func:`read_video_list`).
        save_on_stop: a build stopped by an exception (Ctrl-C, SIGTERM, a probe timeout) saves the videos probed
            since the last save and says so. False for a cache deleted right after (a benchmark's temporary
            folder): the save would be for nothing, and the message that the next build reuses it untrue.

    Returns:
        The index; bad videos are in ``bad`` (with reasons), logged as warnings and written to the quarantine file.

    Raises:
        DataListError: the list is missing or malformed, or none of its videos exists (a wrong root).
        DataError: ``strict`` and at least one video is bad; the one-line message names the list, the bad files
            (the first ten) with their reasons and the quarantine file. Also when videos in a row give no answer
            within ``timeout_s`` (a file system that stopped answering); what was probed before is saved.
    """
    timeout_s = PROBE_TIMEOUT_S if timeout_s is None else timeout_s
    videos = read_video_list(list_path, root, num_classes, classes_name=classes_name)
    root_abs = os.path.abspath(root)
    paths = index_paths(list_path)
    keys = None if checked_by_peer else videos.stat_keys(timeout_s=timeout_s)
    if keys is not None and root_name is not None:
        check_list_root(videos, root_name, keys[2])  # a wrong root: refused, not quarantined video by video
    keys, match, current = _read_cached(videos, keys, paths, root_abs, full_decode, timeout_s)
    files_probed = 0
    if not current:
        match, files_probed = _probe_and_quarantine(list_path, videos, keys, paths, root_abs,
                                                    full_decode=full_decode, workers=workers, progress=progress,
                                                    timeout_s=timeout_s, save_on_stop=save_on_stop)
    index = DatasetIndex(videos, match.table, match.bad, paths.quarantine, paths.lock, cache_path=paths.cache,
                         probed=int(match.jobs.size), missing=int(np.count_nonzero(~keys[2])),
                         probed_files=files_probed)
    bad = sorted(match.bad.items())
    _warn_bad_videos(videos, bad, list_path, paths.quarantine)
    logger.info("%s", index.summary(name_bad=False, left_out=not strict))  # the warnings above named them
    if strict and bad:
        raise _strict_refusal(videos, bad, list_path, paths.quarantine)
    # No readable video at all: each caller says so in its own terms (the loader refuses the list, verify_data and
    # predict name every video's reason), so nothing more is logged here.
    return index


def _read_cached(videos: VideoList, keys: tuple[np.ndarray, np.ndarray, np.ndarray] | None, paths: IndexPaths,
                 root_abs: str, full_decode: bool,
                 timeout_s: float) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], CacheMatch, bool]:
    """Match the list to the cache under a shared lock: ``(keys, match, current)``, ``current`` when the cache and
    the quarantine file already cover every video as it is on disk. ``keys`` None (``checked_by_peer``): taken
    from the cache's rows, only the rows it lacks stat'ed."""
    # Readers first, under a shared lock: when the cache already covers every video as it is on disk (every rank
    # of a run after the first build), all ranks read it at once instead of one after another.
    with locked(paths.lock, shared=True):
        # (an unreadable cache is not current: the read under the exclusive lock below says so, once)
        cache = load_cache(paths.cache, root_abs, paths.json_cache, warn=False)
        if keys is None:
            keys = cached_keys(videos, cache, timeout_s)
        match = match_list(videos, keys, cache, full_decode)
        del cache
        current = match.current and _quarantine_is(paths.quarantine, _quarantine_text(videos, match.bad))
    return keys, match, current


def _probe_and_quarantine(list_path: str, videos: VideoList, keys, paths: IndexPaths, root_abs: str, *,
                          full_decode: bool, workers: int, progress: bool, timeout_s: float,
                          save_on_stop: bool) -> tuple[CacheMatch, int]:
    """Under the exclusive lock, match the list to the cache again, probe what it lacks, save the cache and write
    (or remove) the quarantine file; the match, complete, and the number of files probed. A probe timeout is a
    DataError naming the storage."""
    with locked(paths.lock):  # probe and write, one process at a time; another may have done it meanwhile
        match = match_list(videos, keys, load_cache(paths.cache, root_abs, paths.json_cache), full_decode)
        _reuse_beside(match, videos, keys, paths, root_abs, full_decode)
        log_other_root(paths.cache, match, root_abs)
        try:
            files = _probe_and_save(match, videos, keys, full_decode, workers, progress, paths, timeout_s,
                                    save_on_stop)
        except WorkerTimeoutError as e:
            raise DataError(f"indexing {list_path}: {e}. Check the storage under {root_abs} (a larger "
                            "DATA.VIDEO_TIMEOUT_S waits longer, 0 for ever)" + ("; the videos probed so far "
                            "are saved, the next build probes only the rest" if save_on_stop else "")) from e
        text = _quarantine_text(videos, match.bad)
        if text:
            atomic_write(paths.quarantine, lambda f: f.write(text.encode(**QUARANTINE_ENCODING)))
        elif os.path.exists(paths.quarantine):
            os.unlink(paths.quarantine)  # stale: every listed video is fine now
    return match, files


def _reuse_beside(match: CacheMatch, videos: VideoList, keys, paths: IndexPaths, root_abs: str,
                  full_decode: bool) -> None:
    """Fill the rows ``match`` would probe from the cache beside the list (``paths.beside``) when that one was
    written after this one: a per-user cache (or one beside a link) started as its copy, and the owner's later
    builds there would otherwise be probed again by every user. Read only when there is something to probe."""
    if not (match.jobs.size and paths.beside):
        return
    try:
        if os.stat(paths.beside).st_mtime_ns <= os.stat(paths.cache).st_mtime_ns:
            return
    except FileNotFoundError:  # no cache here yet (its copy failed): the one beside is newer; none there: nothing
        if not os.path.exists(paths.beside):
            return
    newer = load_cache(paths.beside, root_abs)
    reused = reuse_newer(match, videos, keys, newer, full_decode) if newer is not None else 0
    if reused:
        logger.info("index cache %s: %s reused from the newer cache %s beside the list", paths.cache,
                    counted(reused, "list row"), paths.beside)


def _warn_bad_videos(videos: VideoList, bad: list[tuple[int, str]], list_path: str, quarantine: str) -> None:
    """One warning per bad video, the first :data:`BAD_VIDEOS_NAMED`, then one line counting the rest."""
    for row, why in bad[:BAD_VIDEOS_NAMED]:
        logger.warning("bad video %s: %s", videos.shown_path(row), why)
    if len(bad) > BAD_VIDEOS_NAMED:  # a half-downloaded dataset would otherwise fill the log, once per rank
        logger.warning("and %s in %s: all %d listed with their reasons in %s",
                       counted(len(bad) - BAD_VIDEOS_NAMED, "more bad video"), list_path, len(bad), quarantine)


def _strict_refusal(videos: VideoList, bad: list[tuple[int, str]], list_path: str, quarantine: str) -> DataError:
    """``DATA.STRICT``'s refusal of a list with bad videos."""
    # Per-video failures are BadVideoErrors internally; refusing the whole list is an input error (DataError),
    # which command-line entry points report in one line without a traceback.
    # One line: up to _STRICT_NAMED files inline, every one in the quarantine file (and the warnings above).
    named = [f"{videos.shown_path(r)} ({why})" for r, why in bad[:_STRICT_NAMED]]
    more = f"; and {len(bad) - len(named)} more" if len(bad) > len(named) else ""
    return DataError(
        f"DATA.STRICT is on and {len(bad):,} of {counted(len(videos), 'video')} in {list_path} "
        f"{'is' if len(bad) == 1 else 'are'} unreadable: "
        f"{'; '.join(named)}{more} (all listed in {quarantine}); fix or remove them, or set DATA.STRICT "
        "False to leave them out")
