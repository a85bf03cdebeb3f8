"""A read video list as columns (:class:`VideoList`), one :class:`ListEntry` built per row on demand, and what is
asked of the list's files: their paths, the key that names one file alike on every line, the rows that repeat a
file, and their size and mtime now (``stat_keys``, in threads for a long list)."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from evautil.files import plain_spelling
from evautil.workers import DaemonThreadPool

from .data_errors import DataError
from .path_table import PathTable

__all__ = ["ListEntry", "VideoList"]

# Lists this long stat their files in threads (below it the threads cost more than they save).
_STAT_THREADED_FROM = 10_000
_STAT_THREADS = 16


@dataclass(frozen=True)
class ListEntry:
    """One video of a list.

    Attributes:
        row: 0-based position among the list's entries (blank lines not counted); the ``index`` the loader yields.
        rel_path: the file name as written in the list (relative to ``root``; a leading ``~`` read as the home
            folder, :func:`~dali_pipelines.list_lines.listed_path`).
        path: ``os.path.join(root, rel_path)``.
        label: integer class label.
        line_no: 1-based line number in the list file (for error messages).
    """

    row: int
    rel_path: str
    path: str
    label: int
    line_no: int

@dataclass(frozen=True)
class VideoList:
    """A parsed list as columns (row ``r`` is the ``r``-th entry, blank lines not counted).

    Attributes:
        list_path, root: the list file and the directory its paths are relative to.
        rel_paths: the file names as written in the list (a leading ``~`` read as the home folder).
        labels: int64 class labels; line_nos: int32 1-based line numbers in the list file (for messages).
    """

    list_path: str
    root: str
    rel_paths: PathTable
    labels: np.ndarray
    line_nos: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @cached_property
    def content_digest(self) -> str:
        """A short digest of what the list names, row by row (its paths as written, its labels): a list rewritten
        with as many lines (another order, a video replaced) has another one. Computed once: a list is read once."""
        digest = hashlib.sha1(self.rel_paths.offsets.tobytes())
        digest.update(self.rel_paths.blob.tobytes())
        digest.update(self.labels.astype(np.int64).tobytes())
        return digest.hexdigest()[:12]

    def rel_path(self, row: int) -> str:
        return self.rel_paths[row]

    def path(self, row: int) -> str:
        return os.path.join(self.root, self.rel_paths[row])

    def shown_path(self, row: int) -> str:
        """:meth:`path` as a message names it: absolute, ``..`` and ``.`` resolved by name (``<root>/../b/x.mp4``
        reads ``<parent>/b/x.mp4``). Only for display: files are opened by :meth:`path`, whose ``..`` after a
        symbolic link leads where the link's target says."""
        return os.path.abspath(self.path(row))

    def entry(self, row: int) -> ListEntry:
        rel = self.rel_paths[row]
        return ListEntry(row=row, rel_path=rel, path=os.path.join(self.root, rel), label=int(self.labels[row]),
                         line_no=int(self.line_nos[row]))

    def file_key(self, row: int) -> str:
        """What names row ``row``'s file alike on every line that names it: its path as written, less what cannot
        change the file (``videos/./a.mp4``, ``videos//a.mp4`` and ``x/../videos/a.mp4`` with ``x`` a real folder
        are ``videos/a.mp4``; :func:`evautil.files.plain_spelling`), joined to the root as :meth:`path` joins it
        (an absolute line naming a file under the root is that file too). Files are still opened by :meth:`path`."""
        return os.fsdecode(self._file_key(self.rel_paths.raw(row)))

    def _file_key(self, raw: bytes) -> bytes:
        """:meth:`file_key` of a path's bytes (``os.fsencode``'s; as bytes: a Kinetics-size list's rows are keyed at
        every start, and most need nothing taken out)."""
        if b"//" in raw or b"/." in raw or raw.startswith(b"."):
            raw = os.fsencode(plain_spelling(os.fsdecode(raw), self.root))
        return raw if raw.startswith(b"/") else self._plain_root + raw

    @cached_property
    def _plain_root(self) -> bytes:
        """The root's plain spelling, as the start of a path joined to it (``b""`` or ending with ``/``)."""
        return os.fsencode(os.path.join(plain_spelling(self.root), "")) if self.root else b""

    def repeated(self) -> list[np.ndarray]:
        """The rows of each file the list names on more than one line (:meth:`file_key`), in list order; the
        files in the order of their first line. Each such line is an entry of its own: a training list that
        repeats a video trains it once per line, a test list scores it once per line."""
        data, cut = self.rel_paths.blob.tobytes(), self.rel_paths.offsets.tolist()
        first: dict[bytes, int] = {}
        groups: dict[int, list[int]] = {}
        for r in range(len(self)):
            f = first.setdefault(self._file_key(data[cut[r]:cut[r + 1]]), r)
            if f != r:
                groups.setdefault(f, [f]).append(r)
        return [np.asarray(groups[f], np.int64) for f in sorted(groups)]

    def stat_keys(self, rows: np.ndarray | None = None,
                  timeout_s: float = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(size, mtime_ns, present)`` of every row's file now (int64, int64, bool; zeros where ``os.stat``
        fails). With ``rows`` (row numbers), only those files are stat'ed; the other rows stay zero.

        ``timeout_s`` > 0: DataError naming a file when no ``os.stat`` has returned for that many seconds (a network
        file system that stopped answering); the stuck threads are left behind and do not keep the process alive."""
        n = len(self)
        size, mtime, present = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool)
        root, data, cut = os.fsencode(self.root), self.rel_paths.blob.tobytes(), self.rel_paths.offsets.tolist()
        wanted = np.arange(n) if rows is None else np.asarray(rows, np.int64)
        stat_now: dict[int, int] = {}  # part -> the row its thread is stat'ing (while it is)

        def stat_rows(part: np.ndarray, k: int = -1) -> None:
            for r in part.tolist():
                stat_now[k] = r
                try:
                    st = os.stat(os.path.join(root, data[cut[r]:cut[r + 1]]))
                except OSError:
                    continue
                size[r], mtime[r], present[r] = st.st_size, st.st_mtime_ns, True
            stat_now.pop(k, None)

        if not wanted.size or (wanted.size < _STAT_THREADED_FROM and timeout_s <= 0):
            stat_rows(wanted)
            return size, mtime, present
        # os.stat releases the GIL: on a network file system, where one stat waits for a metadata server, threads
        # overlap the waits (one process per node stats every listed video at every start).
        chunk = -(-wanted.size // (4 * _STAT_THREADS))
        parts = [wanted[i:i + chunk] for i in range(0, wanted.size, chunk)]
        pool = DaemonThreadPool(min(_STAT_THREADS, len(parts)) or 1, "stat")
        try:
            futures = [pool.submit(stat_rows, part, k) for k, part in enumerate(parts)]
            seen, last_change = None, time.monotonic()
            while not all(f.done() for f in futures):
                cf.wait(futures, timeout=min(1.0, timeout_s) if timeout_s > 0 else None)
                now = dict(stat_now)  # one copy: the threads change it meanwhile
                progress = (sum(f.done() for f in futures), now)
                if progress != seen:
                    seen, last_change = progress, time.monotonic()
                elif timeout_s > 0 and time.monotonic() - last_change >= timeout_s and now:
                    r = min(now.values())
                    raise DataError(
                        f"{self.list_path}: looking up {self.path(r)} (os.stat) gave no answer within "
                        f"{timeout_s:g} s: the file system under {self.root} does not answer; check it (a larger "
                        "DATA.VIDEO_TIMEOUT_S waits longer, 0 for ever)")
            for f in futures:
                f.result()  # an unexpected error in a thread is raised here
            pool.shutdown(wait=True)  # idle threads: they end at once, and nothing of them stays behind
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return size, mtime, present
