"""The dataset index in memory: the probed state of one video list, as columns.

A Kinetics-size list has hundreds of thousands of videos and every rank of a run holds its index, so
:class:`DatasetIndex` keeps the list (:class:`~dali_pipelines.filelist.VideoList`) and the probed facts
(:class:`~dali_pipelines.video_table.VideoTable`) as arrays: about 115 bytes per video (64 of probed facts, 48 of
list), no Python object per video. ``ListEntry`` and ``VideoInfo`` objects are built on demand for one row
(``entries``, ``infos``, ``info``).
Built by :func:`dali_pipelines.index.build_index`. Another list's index of the run (validation's) can be told of
the videos this one quarantines where both name the same file (:meth:`DatasetIndex.pass_quarantines_to`). Display
turns learnt after the build (a migrated cache's rows record none) are kept in its cache
(:meth:`DatasetIndex.record_turns`). The summary a build logs (:meth:`DatasetIndex.summary`) is ``index_summary.py``'s.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import MutableMapping, Sequence
from functools import cached_property
from typing import Iterator

import numpy as np

from evautil.progress import counted

from .filelist import ListEntry, VideoList
from .index_lock import locked
from .index_store import IndexCache, load_cache, save_cache, stat_key
from .index_summary import BAD_VIDEOS_NAMED, _most_common, _repeated_text, summary_text  # noqa: F401 (re-exported)
from .video_table import BAD, GOOD, NUMBERED_AS_INDEXED, UNKNOWN, VideoInfo, VideoTable

__all__ = ["DatasetIndex", "quarantine_line", "QUARANTINE_ENCODING"]

logger = logging.getLogger("dali_pipelines.index")  # one logger for the index, whichever module speaks

# How the quarantine file is written and read back (open()'s and str.encode's keywords): UTF-8, a name's bytes that
# are not UTF-8 (a '~' line under a home folder so named, as the file system hands it over: surrogates) written as
# they are, so that the file names the video as the file system does and a build reads back the name it wrote.
# Strict UTF-8 refused such a name: the build stopped with UnicodeEncodeError.
QUARANTINE_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}

# Runtime quarantines reach the cache file at most this often (and at every flush): each write rewrites the whole
# cache (73 MB, about a quarter of a second, for 650,000 videos), which a burst of failures (a folder deleted during
# the run) paid once per video. The quarantine file gets every line at once (one it could not take: at each flush).
CACHE_RECORD_INTERVAL_S = 30.0


class _Infos(MutableMapping):
    """``row -> VideoInfo`` of the good rows, each built from (or written into) the index's table on access."""

    def __init__(self, index: "DatasetIndex"):
        self._index = index

    def __getitem__(self, row: int) -> VideoInfo:
        if not self._index.is_good(row):
            raise KeyError(row)
        return self._index.table.info(int(row))

    def __setitem__(self, row: int, info: VideoInfo) -> None:
        """Replace (or set) a row's facts, e.g. to describe a file that was replaced; the row becomes good."""
        table = self._index.table
        table.set_good(int(row), info, bool(table.columns["full_decode"][row]))
        self._index.bad.pop(int(row), None)

    def __delitem__(self, row: int) -> None:
        if not self._index.is_good(row):
            raise KeyError(row)
        self._index.table.clear(np.asarray([int(row)]))

    def __contains__(self, row: object) -> bool:
        return self._index.is_good(row)

    def __iter__(self) -> Iterator[int]:
        return iter(self._index.good_rows)

    def __len__(self) -> int:
        return int(np.count_nonzero(self._index.good_mask))


class _Entries(Sequence):
    """The list's entries, each ``ListEntry`` built on access (``entries[row].row == row``)."""

    def __init__(self, videos: VideoList):
        self._videos = videos

    def __getitem__(self, row):
        n = len(self._videos)
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(n))]
        if not -n <= row < n:
            raise IndexError(f"row {row} of a list of {n}")
        return self._videos.entry(int(row) % n)

    def __len__(self) -> int:
        return len(self._videos)


class DatasetIndex:
    """The probed state of one video list, held as columns (no Python object per video).

    Attributes:
        list_path, root: the list and the directory its paths are relative to.
        videos: the list (:class:`VideoList`: paths, labels, line numbers).
        table: the probed facts of every row (:class:`VideoTable`; ``GOOD`` rows are the usable videos).
        bad: ``row -> reason`` for videos left out (probe failures and runtime quarantines).
        quarantine_path: text file listing bad videos as ``<rel path>\\t<reason>`` lines (:func:`quarantine_line`).
        lock_path: the lock file that guards the cache and quarantine files.
        cache_path: the ``.index.npz`` cache file.
        probed: how many videos (list rows) this build actually probed (0 when everything came from the cache).
        probed_files: how many files those were: fewer where the list names a file on several lines, which is
            probed once (None: one file per row).
        missing: how many listed files this build could not find (or stat): neither probed nor from the cache.
        entries: every list entry as a sequence of ``ListEntry`` (built on access), good or bad.
        infos: ``row -> VideoInfo`` for good videos only (a mapping over ``table``, built on access).
    """

    def __init__(self, videos: VideoList, table: VideoTable, bad: dict[int, str], quarantine_path: str,
                 lock_path: str, cache_path: str = "", probed: int = 0, missing: int = 0,
                 probed_files: int | None = None):
        if len(table) != len(videos):
            raise ValueError(f"{len(table)} table rows for a list of {len(videos)}")
        self.videos, self.table, self.bad = videos, table, bad
        # rows of ``bad`` quarantined after the build (by a loader of this index): not "bad when indexed"
        self.quarantined_at_run: set[int] = set()
        self.list_path, self.root = videos.list_path, videos.root
        self.quarantine_path, self.cache_path, self.probed = quarantine_path, cache_path, probed
        self.missing = missing
        self.probed_files = probed if probed_files is None else probed_files
        self.lock_path = lock_path
        self.entries = _Entries(videos)
        self.infos = _Infos(self)
        self._unrecorded: list[tuple[str, tuple[int, int] | None, tuple[int, int] | None, str]] = []
        self._unrecorded_lock = threading.Lock()  # the feeder's thread quarantines while the loop flushes
        self._recorded_at = float("-inf")
        # rel path -> reason: quarantine file lines not written yet (a folder briefly unwritable, a full disk), in
        # order; each quarantine and flush tries them again, so the file lists every video the run left out
        self._unwritten: dict[str, str] = {}
        # file (the quarantine file, the cache) -> (rel paths of the quarantines this run could not record there,
        # the first error): said once per file, at the next flush (flush_quarantines), not once per video and rank
        self._not_recorded: dict[str, tuple[set[str], str]] = {}
        self._not_recorded_said: set[str] = set()
        # (index, its row of each of our rows naming the same file): indexes of other lists of this run, whose
        # loaders leave out what ours quarantine (pass_quarantines_to)
        self._passed_to: list[tuple["DatasetIndex", dict[int, list[int]]]] = []

    @property
    def good_mask(self) -> np.ndarray:
        """Whether each row is a usable video (a bool array, a copy)."""
        return self.table.status == GOOD

    @property
    def good_rows(self) -> list[int]:
        """Rows of the usable videos, ascending."""
        return np.flatnonzero(self.good_mask).tolist()

    @property
    def good_entries(self) -> list[ListEntry]:
        return [self.entries[r] for r in self.good_rows]

    def is_good(self, row) -> bool:
        return isinstance(row, (int, np.integer)) and 0 <= row < len(self) and self.table.status[row] == GOOD

    def info(self, row: int) -> VideoInfo:
        """The VideoInfo of good ``row``."""
        return self.infos[row]

    def path(self, row: int) -> str:
        return self.videos.path(row)

    def label(self, row: int) -> int:
        return int(self.videos.labels[row])

    def num_frames(self, row: int) -> int:
        if not self.is_good(row):
            raise KeyError(row)
        return int(self.table.columns["num_frames"][row])

    def __len__(self) -> int:
        return len(self.videos)

    def decoder_groups(self) -> tuple[list[VideoInfo], np.ndarray]:
        """The good videos grouped by the facts that decide their decoder (codec, coded size or, where unknown,
        display size, pixel format): ``(facts, group_of_row)``, the VideoInfo of one video of each group and each
        row's group (-1 for rows that are not good). Routing decides once per group, not once per video."""
        good, c = np.flatnonzero(self.good_mask), self.table.columns
        width = np.where(c["coded_width"][good] > 0, c["coded_width"][good], c["width"][good])
        height = np.where(c["coded_height"][good] > 0, c["coded_height"][good], c["height"][good])
        key = np.stack([c["codec"][good], width, height, c["pix_fmt"][good]], axis=1).astype(np.int64)
        groups = np.full(len(self), -1, np.int32)
        if not good.size:
            return [], groups
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        groups[good] = inverse.reshape(-1)
        return [self.table.info(int(good[i])) for i in first], groups

    def nvdec_misnumbered(self) -> list[tuple[str, str, np.ndarray]]:
        """The good videos the index knows NVDEC would number otherwise than it does (``VideoInfo.nvdec_problem``),
        as ``(codec, reason, rows)`` per distinct pair, in the order of each pair's first row; counted on the codes."""
        c, texts = self.table.columns, self.table.texts
        problems = [i for i, t in enumerate(texts["nvdec_numbering"]) if t not in ("", NUMBERED_AS_INDEXED)]
        rows = np.flatnonzero(self.good_mask & np.isin(c["nvdec_numbering"], problems))
        if not rows.size:
            return []
        key = np.stack([c["codec"][rows], c["nvdec_numbering"][rows]], axis=1).astype(np.int64)
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        return [(texts["codec"][key[i, 0]], texts["nvdec_numbering"][key[i, 1]], rows[inverse == g])
                for g, i in sorted(enumerate(first.tolist()), key=lambda gi: gi[1])]

    def quarantine(self, row: int, reason: str, remember: bool = True, record: bool = True) -> None:
        """Mark a video bad after a runtime failure (e.g. the GPU decoder rejected it).

        The video leaves ``infos``/``good_rows``, at every line of the list that names its file (each said in the
        log), and a line is appended to the quarantine file. The cache records
        it as bad, so the next build leaves it out too unless the file is replaced; but when the file already
        differs from what was probed (size or modification time), the failure may be the change itself: its cache
        record is dropped instead, so the next build probes the file as it is now. Not ``remember``: a failure that
        may pass (a read that did not end); the cache is left as it is and the next build uses the video again
        (its file is not even stat'ed: on a file system that stopped answering, that would hang too). Cache
        records are written at most every ``CACHE_RECORD_INTERVAL_S`` seconds; :meth:`flush_quarantines` writes the
        rest (the loader calls it at each epoch's end and when it closes). Not ``record``: the quarantine file and
        the cache are left to another process of this machine (ranks learning another rank's quarantine), which
        writes the same files. A record that cannot be written stays pending, tried again at each flush (a full
        disk may have room again); one still not written then is said once, by :meth:`flush_quarantines`.
        """
        path = self.videos.path(row)
        reason = " ".join(str(reason).split()) or "runtime failure"
        # with the list's other lines naming the same file: left in, they were decoded again this run (failing
        # again, or waiting out DATA.VIDEO_TIMEOUT_S again) and left out only from the next build on
        rows = [int(row)] + [int(r) for r in self._same_file_rows.get(int(row), ()) if r != row and self.is_good(r)]
        rels = [self._mark_bad(r, reason, remember, record) for r in rows]
        for r in rows[1:]:
            logger.warning("%s: left out at line %d too, which names the same file", path,
                           int(self.videos.line_nos[r]))
        if record:
            try:
                with locked(self.lock_path):
                    self._write_quarantine_lines()  # (its own failures: noted there, as the cache's)
                    if time.monotonic() - self._recorded_at >= CACHE_RECORD_INTERVAL_S:
                        self._record_in_cache()
            except OSError as e:  # the lock itself: the records are for later runs, this one goes on without the video
                logger.debug("could not record the quarantine of %s (%s)", path, e)
                self._could_not_record(self.quarantine_path, rels, e)
        # after our own lines: a list passed to may be ours (the same list), whose file then keeps our reason
        for other, shared in self._passed_to:
            for there in (t for r in rows for t in shared.get(r, ())):
                if other.is_good(there):
                    logger.warning("%s: left out of %s too (line %d), which lists the same file", path,
                                   other.list_path, int(other.videos.line_nos[there]))
                    other.quarantine(there, f"{reason} (quarantined reading {self.list_path} earlier in this run)",
                                     remember, record)

    def _mark_bad(self, row: int, reason: str, remember: bool, record: bool) -> str:
        """Mark ``row`` bad for :meth:`quarantine`, its quarantine line and cache record made pending (``record``);
        returns its path as written."""
        rel, path = self.videos.rel_path(row), self.videos.path(row)
        c = self.table.columns
        probed = (int(c["size"][row]), int(c["mtime_ns"][row])) if self.is_good(row) else None
        self.table.set_bad(row, reason, int(c["size"][row]), int(c["mtime_ns"][row]), True)
        self.bad[row] = reason
        self.quarantined_at_run.add(row)
        logger.debug("quarantined %s: %s", path, reason)  # the schedule's warning names it
        if record:
            with self._unrecorded_lock:
                if self.cache_path and remember:
                    self._unrecorded.append((rel, stat_key(path), probed, reason))
                self._unwritten.setdefault(rel, reason)  # (a row naming the same file, still pending: its reason)
        return rel

    @cached_property
    def _same_file_rows(self) -> dict[int, np.ndarray]:
        """``{row: every row of its file}`` for the files the list names on several lines (``VideoList.repeated``);
        found at the first quarantine, not at every build."""
        return {int(r): rows for rows in self.videos.repeated() for r in rows.tolist()}

    def _files(self) -> Iterator[tuple[int, tuple[str, str]]]:
        """``(row, (real folder, file name))`` of every listed file: the same key whatever path or symbolic link a
        list reaches it by (its folders are resolved, each once, not its files)."""
        real: dict[str, str] = {}
        root = os.path.abspath(self.root)
        data, cut = self.videos.rel_paths.blob.tobytes(), self.videos.rel_paths.offsets.tolist()
        for r in range(len(self)):
            folder, name = os.path.split(os.path.join(root, os.fsdecode(data[cut[r]:cut[r + 1]])))
            if folder not in real:
                real[folder] = os.path.realpath(folder)
            yield r, (real[folder], name)

    def shared_with(self, other: "DatasetIndex") -> dict[int, list[int]]:
        """``{our row: other's rows}`` of the files both lists name (every line of each). Only the shorter list's
        files are held at once (a validation list beside a training list ten times its length)."""
        small, large = (other, self) if len(other) <= len(self) else (self, other)
        keyed: dict[tuple[str, str], list[int]] = {}
        for r, key in small._files():
            keyed.setdefault(key, []).append(r)
        out: dict[int, list[int]] = {}
        for r, key in large._files():
            for s in keyed.get(key, ()):
                if large is self:
                    out.setdefault(r, []).append(s)
                else:
                    out.setdefault(s, []).append(r)
        return out

    def pass_quarantines_to(self, other: "DatasetIndex", shared: dict[int, list[int]] | None = None) -> None:
        """From now on, a video this index quarantines (:meth:`quarantine`) is quarantined in ``other`` too when its
        list names the same file (``shared``: :meth:`shared_with`, when known): the loaders of ``other`` (e.g. the
        validation's, with a list that overlaps the training's) do not decode again, or wait again for, a video this
        run found broken. ``other``'s quarantine file names it, with the reason and where it was found."""
        if other is not self:
            self._passed_to.append((other, self.shared_with(other) if shared is None else shared))

    def flush_quarantines(self) -> None:
        """Write the runtime quarantines not yet in the quarantine file or the cache file (see :meth:`quarantine`),
        then say, once per file and run, a quarantine file or cache that could not be written
        (:meth:`_say_not_recorded`)."""
        if self._unwritten or self._unrecorded:
            try:
                with locked(self.lock_path):
                    self._write_quarantine_lines()
                    self._record_in_cache()
            except OSError as e:  # the lock itself (a read-only folder): kept, tried again at the next flush
                with self._unrecorded_lock:
                    lines, rels = list(self._unwritten), [record[0] for record in self._unrecorded]
                if lines:
                    self._could_not_record(self.quarantine_path, lines, e)
                if rels:
                    self._could_not_record(self.cache_path, rels, e)
        self._say_not_recorded()

    def _write_quarantine_lines(self) -> None:
        """Under the lock: append the quarantine file lines not yet written (:func:`quarantine_line`), in order, but
        not for a video the file lists already (another row or index of its list quarantined it). Lines a failed
        write kept out stay pending for the next try (:meth:`flush_quarantines`)."""
        with self._unrecorded_lock:
            pending = dict(self._unwritten)
        if not pending:
            return
        try:
            listed, cut = _listed(self.quarantine_path)
            lines = "".join(quarantine_line(rel, reason) for rel, reason in pending.items() if rel not in listed)
            if lines:
                with open(self.quarantine_path, "a", **QUARANTINE_ENCODING) as f:
                    f.write(("\n" if cut else "") + lines)  # (after a line an earlier failed write cut short)
        except OSError as e:  # (a full disk, an unwritable folder): this run goes on, said once by flush_quarantines
            self._could_not_record(self.quarantine_path, list(pending), e)
            return
        with self._unrecorded_lock:  # written now: a failure not yet said is no longer true
            for rel in pending:
                self._unwritten.pop(rel, None)
            if not self._unwritten and self.quarantine_path not in self._not_recorded_said:
                self._not_recorded.pop(self.quarantine_path, None)

    def _could_not_record(self, file: str, rels: list[str], error: OSError) -> None:
        """Note that the quarantines of ``rels`` could not be written in ``file`` (:meth:`_say_not_recorded`)."""
        with self._unrecorded_lock:
            self._not_recorded.setdefault(file, (set(), " ".join(str(error).split())))[0].update(rels)

    def _say_not_recorded(self) -> None:
        """One warning per file the first time quarantines could not be recorded there, naming it, how many and the
        first error; later ones of the run are not said again (they fail alike: a read-only folder, a full disk).
        When both files failed since the last flush (a read-only folder), one line names both. The records of both
        stay pending and each flush tries them again; one that succeeds before this is said leaves nothing to say."""
        with self._unrecorded_lock:
            new = [file for file in self._not_recorded if file not in self._not_recorded_said]
            if not new:
                return
            self._not_recorded_said.update(new)
            rels = set().union(*(self._not_recorded[file][0] for file in new))
            error = self._not_recorded[self.quarantine_path if len(new) == 2 else new[0]][1]
        videos = counted(len(rels), "video")
        if len(new) == 2:  # (the quarantine file's error: the first when a folder is read-only)
            logger.warning("could not record the quarantine of %s in %s (%s), nor in the index cache %s; this run "
                           "leaves them out all the same, and a later run will try them again unless this run can "
                           "record them in the cache later", videos, self.quarantine_path, error, self.cache_path)
        elif new[0] == self.cache_path:  # (the records stay pending: _record_in_cache)
            logger.warning("could not record the quarantine of %s in the index cache %s (%s); this run leaves them "
                           "out all the same, and a later run will try them again unless this run can record them "
                           "later", videos, self.cache_path, error)
        else:
            logger.warning("could not record the quarantine of %s in %s (%s); this run leaves them out all the same, "
                           "but a later run will try them again unless the index cache recorded them", videos,
                           self.quarantine_path, error)

    def _record_in_cache(self) -> None:
        """Under the lock: the quarantines of :meth:`quarantine` not yet recorded, into the cache file at once. The
        file is written only when it changes: the ranks of a machine that learn of another rank's quarantine each
        record it (``Schedule.learn_quarantines``), and only the first of them finds it missing. Records a failed
        save could not write stay pending for the next try."""
        with self._unrecorded_lock:
            pending, self._unrecorded, self._recorded_at = self._unrecorded, [], time.monotonic()
        if not pending:
            return
        root = os.path.abspath(self.root)
        cache = load_cache(self.cache_path, root) or IndexCache.empty()
        changed = False
        for rel, key, probed, reason in pending:
            at = cache.rel_paths.find(rel)
            c = cache.table.columns
            if probed is not None and probed[0] > 0 and key != probed:  # changed since it was probed
                if at >= 0 and cache.table.status[at] != UNKNOWN:
                    cache.table.clear(np.asarray([at]))
                    changed = True
                continue
            if key is None:
                continue
            if at < 0:
                at = len(cache.rel_paths)
                cache = IndexCache(cache.rel_paths.append(rel), cache.table.take(np.append(np.arange(at), -1)))
            elif (cache.table.status[at] == BAD and c["full_decode"][at]
                  and (int(c["size"][at]), int(c["mtime_ns"][at])) == key):
                continue  # recorded already (by another process of this machine, or another list row)
            cache.table.set_bad(at, reason, key[0], key[1], True)
            changed = True
        if changed:
            try:
                save_cache(self.cache_path, os.path.abspath(self.list_path), root, cache.rel_paths, cache.table)
            except OSError as e:  # (a full disk): this run goes on, said once by flush_quarantines
                with self._unrecorded_lock:  # kept, before any quarantined since: the next flush tries them again
                    self._unrecorded = pending + self._unrecorded
                self._could_not_record(self.cache_path, [record[0] for record in pending], e)
                return
        with self._unrecorded_lock:  # all recorded now: a failure not yet said is no longer true
            if self.cache_path not in self._not_recorded_said:
                self._not_recorded.pop(self.cache_path, None)

    def record_turns(self, turns: dict[int, int]) -> None:
        """Keep the display turns learnt after the build (``{row: degrees counter-clockwise}``, read from the first
        frames of rows whose record has none: ``ROTATION_NOT_RECORDED``, a cache migrated from before the turn) in
        the table and in the cache file, as :meth:`_record_in_cache` keeps quarantines: under the lock, the file
        read again, a row's turn written only while the cache's record and the file on disk both still have the
        size and mtime this index probed (a file changed since is probed again by the next build, its turn with it).
        A migrated cache was saved with every turn unrecorded, so each run decoded those first frames again until
        the cache was deleted; now only the first does. A cache that cannot be written is left as it is: the turns
        are learnt again next run."""
        c = self.table.columns
        probed: dict[str, tuple[tuple[int, int], int]] = {}  # rel path -> (size and mtime probed, turn)
        for row, degrees in turns.items():
            if not self.is_good(row):
                continue
            c["rotation"][row] = degrees
            key = (int(c["size"][row]), int(c["mtime_ns"][row]))
            if self.cache_path and stat_key(self.videos.path(row)) == key:
                probed[self.videos.rel_path(row)] = (key, int(degrees))
        if not probed:
            return
        try:
            with locked(self.lock_path):
                root = os.path.abspath(self.root)
                cache = load_cache(self.cache_path, root)
                if cache is None:
                    return
                cc, changed = cache.table.columns, False
                for rel, (key, degrees) in probed.items():
                    at = cache.rel_paths.find(rel)
                    if (at >= 0 and cache.table.status[at] == GOOD and cc["rotation"][at] != degrees
                            and (int(cc["size"][at]), int(cc["mtime_ns"][at])) == key):
                        cc["rotation"][at] = degrees
                        changed = True
                if changed:
                    save_cache(self.cache_path, os.path.abspath(self.list_path), root, cache.rel_paths, cache.table)
        except OSError as e:  # (a read-only folder, a full disk): this run has its turns, the next learns them again
            logger.debug("could not record the display turns of %s in %s (%s)", counted(len(probed), "video"),
                         self.cache_path, e)

    def summary(self, name_bad: bool = True, left_out: bool = True) -> str:
        """Human-readable summary: counts, frame statistics, codecs, and (``name_bad``) the first bad files with
        their reasons; ``left_out``: the bad videos are left out (not when DATA.STRICT refuses the list instead).
        The text is :func:`~dali_pipelines.index_summary.summary_text`'s."""
        return summary_text(self, name_bad, left_out)


def quarantine_line(rel: str, reason: str) -> str:
    """The quarantine file's line of a video: ``<rel>\\t<reason>\\n``, the reason's whitespace runs (line breaks and
    tabs of a library's message) made single spaces. A name may hold a tab (a list line's name is all before the
    label) but no line break, and a reason neither, so the name is the line up to its last tab (:func:`_listed`):
    no escape, so that the files written before this rule read the same."""
    return f"{rel}\t{' '.join(reason.split())}\n"


def _listed(quarantine_path: str) -> tuple[set[str], bool]:
    """The videos the quarantine file has a line for (:func:`quarantine_line`), and whether it ends inside a line (a
    write cut short: a full disk)."""
    listed, line = set(), "\n"
    try:
        with open(quarantine_path, newline="\n", **QUARANTINE_ENCODING) as f:
            for line in f:
                if "\t" in line:
                    listed.add(line.rsplit("\t", 1)[0])
    except FileNotFoundError:
        pass
    return listed, not line.endswith("\n")
