"""Parsing of the original video list format: one ``<relative path> <integer label>`` per line.

The original (mmaction2-derived) loader splits each line on whitespace, joins every token but the last back with
single spaces to form the file name (Kinetics class folders contain spaces, e.g. ``k400/train/arm wrestling/x.mp4``)
and parses the last token as the label. Here the file name is the line up to the whitespace before the label,
taken as written: the same name for the usual single spaces, and the right one for names with runs of spaces or
tabs, which the original's re-joining changed into names that do not exist. Blank lines are skipped. Unlike the
original, every malformed line is reported with the list file and its 1-based line number instead of surfacing
later as a decode failure. Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` (:func:`evautil.text.text_lines`), so that
the numbers are those an editor shows.

A Kinetics-size list has hundreds of thousands of lines, read by every rank of a run: :func:`read_video_list`
keeps it as a few arrays (:class:`VideoList`: the paths in one UTF-8 buffer, labels and line numbers as numpy
columns) instead of one Python object per line; :class:`ListEntry` objects are built on demand, one row at a
time (:func:`read_file_list` builds them all, for short lists and callers that want a plain list).
"""

from __future__ import annotations

import codecs
import concurrent.futures as cf
import hashlib
import os
import time
from array import array
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Iterator

import numpy as np

from evautil.files import not_a_file, plain_spelling
from evautil.text import text_lines
from evautil.workers import DaemonThreadPool

__all__ = ["ListEntry", "DataError", "DataListError", "EmptyListError", "LabelRangeError", "PathTable", "VideoList",
           "read_video_list", "read_file_list", "split_list_line", "list_label", "list_root", "check_list_root"]

# Lines are split in pieces of about this many characters, so that a long list never exists as one Python string
# per line all at once.
_CHUNK_CHARS = 1 << 20
# Lists this long stat their files in threads (below it the threads cost more than they save).
_STAT_THREADED_FROM = 10_000
_STAT_THREADS = 16


@dataclass(frozen=True)
class ListEntry:
    """One video of a list.

    Attributes:
        row: 0-based position among the list's entries (blank lines not counted); the ``index`` the loader yields.
        rel_path: the file name as written in the list (relative to ``root``).
        path: ``os.path.join(root, rel_path)``.
        label: integer class label.
        line_no: 1-based line number in the list file (for error messages).
    """

    row: int
    rel_path: str
    path: str
    label: int
    line_no: int


class DataError(ValueError):
    """The data cannot be used as configured: a list whose videos are all unreadable, fewer usable videos than one
    global batch, bad videos under ``DATA.STRICT``, a decode device that is not available, ... The message names
    the list or file and the config key to change. A ``ValueError`` so that command-line tools can report it as an
    input error (one line, exit code 2) rather than a crash."""


class DataListError(DataError):
    """A video list is missing, empty or malformed; the message names the list file and the 1-based line."""


class EmptyListError(DataListError):
    """A video list without an entry. ``setting``: the config key or flag that gave the list, named when a caller
    that knows it re-names the error with :meth:`named` (the index code is given only the path)."""

    def __init__(self, list_path: str, setting: str = ""):
        super().__init__(list_path, setting)  # both: the error pickles (other ranks)
        self.list_path, self.setting = list_path, setting

    def named(self, setting: str) -> "EmptyListError":
        """The same error, naming ``setting`` as what gave the list."""
        return EmptyListError(self.list_path, setting)

    def __str__(self) -> str:
        if not self.setting:
            return f"video list {self.list_path!r} has no entries (empty or only blank lines)"
        return (f"video list {self.list_path!r} ({self.setting}) has no entries (empty or only blank lines): add "
                f"'<relative path> <label>' lines to it, or set {self.setting} to a list that has them")


class LabelRangeError(DataListError):
    """A list line whose label is outside ``[0, num_classes)``. ``setting`` is what gave ``num_classes`` (a config
    key such as DATA.NUM_CLASSES, or a tool's flag): the message names it with its value, so that a user knows which
    of the two to fix. The index code is given only the number; a caller that knows where it came from re-names the
    error with :meth:`named` (the wording stays here)."""

    def __init__(self, where: str, label: int, num_classes: int, line: str, setting: str = "num_classes"):
        super().__init__(where, label, num_classes, line, setting)  # all of them: the error pickles (other ranks)
        self.where, self.label, self.num_classes, self.line, self.setting = where, label, num_classes, line, setting

    # What names a trained model's class count: its head fixes it, so no setting can be changed to fit the label.
    MODEL_HEAD = "the model's head"

    def named(self, setting: str) -> "LabelRangeError":
        """The same error, naming ``setting`` as what set the number of classes."""
        return LabelRangeError(self.where, self.label, self.num_classes, self.line, setting)

    def __str__(self) -> str:
        if self.setting == self.MODEL_HEAD:
            return (f"{self.where}: label {self.label} is outside [0, {self.num_classes}) as {self.setting} has "
                    f"{self.num_classes} classes (line {self.line!r}): fix the label, or use a model of its classes")
        fix = ("labels start at 0: fix the label" if self.label < 0 else
               f"fix the label, or set {self.setting} to the number of classes (at least {self.label + 1})")
        return (f"{self.where}: label {self.label} is outside [0, {self.num_classes}) as {self.setting} is "
                f"{self.num_classes} (line {self.line!r}): {fix}")


def _decode_text(data: bytes, list_path: str) -> str:
    """The list's text, decoded as UTF-8 (a BOM written by some editors is skipped; one opening a later line is
    dropped as the list's lines are read). A line that is not UTF-8, or
    that holds a NUL character (which no file name can; a UTF-16 list without a BOM reads so), is a malformed line
    like any other: DataListError naming the file, the line and the column."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no, column = _position(data[:e.start].decode("utf-8"))
        utf16 = e.start == 0 and data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        raise DataListError(
            f"{list_path}:{line_no}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {column}"
            + ("; the file starts with a UTF-16 byte-order mark" if utf16 else "") + "); a list is UTF-8 "
            "text: re-encode it, or rename that video and fix its line") from None
    nul = text.find("\x00")
    if nul >= 0:  # else the file's lookup failed on it (ValueError) with a traceback, once every line had parsed
        line_no, column = _position(text[:nul])
        raise DataListError(
            f"{list_path}:{line_no}: a NUL character at column {column}, which no file name can hold; a list is "
            "UTF-8 text (UTF-16 has a NUL in every other byte of an ASCII name): re-encode it, or fix that line")
    return text


def _position(before: str) -> tuple[int, int]:
    """The 1-based line and column of the character that follows ``before``, lines numbered as an editor numbers
    them (``text_lines``), as the list's lines are."""
    lines = text_lines(before + "?")  # "?": the character that follows
    return len(lines), len(lines[-1])


def _lines(text: str) -> Iterator[str]:
    """``text_lines(text)``, one piece at a time: each piece ends just after a ``\\n``, so no line (and no
    ``\\r\\n`` pair) is cut and the lines are exactly those of one ``text_lines`` over the whole text."""
    start = 0
    while start < len(text):
        end = text.find("\n", min(start + _CHUNK_CHARS, len(text)) - 1)
        end = len(text) if end < 0 else end + 1
        yield from text_lines(text[start:end])
        start = end


class PathTable:
    """Many relative paths in two arrays: their UTF-8 bytes one after the other (``blob``) and where each one starts
    (``offsets``, one more than there are paths). About the bytes of the paths themselves, where a list of ``str``
    costs some 60 more bytes per path."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob = np.ascontiguousarray(blob, dtype=np.uint8)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)

    @classmethod
    def from_paths(cls, paths: Iterable[str]) -> "PathTable":
        blob, offsets = bytearray(), array("q", [0])
        for p in paths:
            blob += p.encode("utf-8")
            offsets.append(len(blob))
        return cls(np.frombuffer(blob, np.uint8), np.frombuffer(offsets, np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, i: int) -> bytes:
        """Path ``i`` as UTF-8 bytes."""
        return self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes()

    def __getitem__(self, i: int) -> str:
        if not -len(self) <= i < len(self):
            raise IndexError(f"path {i} of {len(self)}")
        return self.raw(i % len(self)).decode("utf-8")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PathTable) and np.array_equal(self.offsets, other.offsets)
                and np.array_equal(self.blob, other.blob))

    def positions(self) -> dict[bytes, int]:
        """``{path bytes: first position}`` (a dict of every path: for matching two tables that differ)."""
        data, cut = self.blob.tobytes(), self.offsets.tolist()
        out: dict[bytes, int] = {}
        for i in range(len(self)):
            out.setdefault(data[cut[i]:cut[i + 1]], i)
        return out

    def find(self, path: str) -> int:
        """The first position of ``path``, or -1."""
        raw = path.encode("utf-8")
        for i in np.flatnonzero(np.diff(self.offsets) == len(raw)):
            if self.raw(int(i)) == raw:
                return int(i)
        return -1

    def select(self, rows: np.ndarray) -> "PathTable":
        """The paths at ``rows`` (positions), in that order."""
        data, cut = self.blob.tobytes(), self.offsets
        return PathTable.from_paths(data[cut[r]:cut[r + 1]].decode("utf-8") for r in np.asarray(rows).tolist())

    def append(self, path: str) -> "PathTable":
        raw = np.frombuffer(path.encode("utf-8"), np.uint8)
        return PathTable(np.concatenate([self.blob, raw]),
                         np.concatenate([self.offsets, [self.offsets[-1] + len(raw)]]))


@dataclass(frozen=True)
class VideoList:
    """A parsed list as columns (row ``r`` is the ``r``-th entry, blank lines not counted).

    Attributes:
        list_path, root: the list file and the directory its paths are relative to.
        rel_paths: the file names as written in the list.
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
        return self._file_key(self.rel_paths.raw(row)).decode("utf-8")

    def _file_key(self, raw: bytes) -> bytes:
        """:meth:`file_key` of a path's UTF-8 bytes (as bytes: a Kinetics-size list's rows are keyed at every
        start, and most need nothing taken out)."""
        if b"//" in raw or b"/." in raw or raw.startswith(b"."):
            raw = plain_spelling(raw.decode("utf-8"), self.root).encode("utf-8")
        return raw if raw.startswith(b"/") else self._plain_root + raw

    @cached_property
    def _plain_root(self) -> bytes:
        """The root's plain spelling, as the start of a path joined to it (``b""`` or ending with ``/``)."""
        return os.path.join(plain_spelling(self.root), "").encode("utf-8") if self.root else b""

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


def read_video_list(list_path: str, root: str, num_classes: int | None = None, *,
                    classes_name: str = "num_classes") -> VideoList:
    """Read a ``<relative path, may contain spaces> <integer label>`` list into columns.

    Args:
        list_path: the list file.
        root: directory the relative paths are joined to.
        num_classes: when given, every label must lie in ``[0, num_classes)``.
        classes_name: what set ``num_classes`` (e.g. ``DATA.NUM_CLASSES``, ``--num-classes``), named with a label
            outside it.

    Raises:
        DataListError: missing or unreadable list, no entries, a line that is not UTF-8, a line without a label, a
            non-integer label or a label out of range (LabelRangeError). The message names the list file and the
            line.
    """
    if not os.path.isfile(list_path):
        # (a folder, the data folder given for its list, is not a missing file: said so, with what is wanted)
        fix = ": name the list file, one '<path> <label>' line per video" if os.path.isdir(list_path) else ""
        raise DataListError(f"video list {list_path!r} {not_a_file(list_path)}{fix}")
    try:
        with open(list_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataListError(f"cannot read video list {list_path!r}: {e}") from e
    text = _decode_text(data, list_path)
    del data

    blob, offsets, labels, line_nos = bytearray(), array("q", [0]), array("q"), array("i")
    for line_no, line in enumerate(_lines(text), start=1):
        # lists joined with cat each bring their BOM: it opened the next line's file name, unseen in any message
        line = line[1:] if line.startswith("\ufeff") else line
        tokens = line.split()
        if not tokens:
            continue
        labels.append(_label(tokens, line, f"{list_path}:{line_no}", num_classes, classes_name, first=not labels))
        blob += split_list_line(line)[0].encode("utf-8")
        offsets.append(len(blob))
        line_nos.append(line_no)
    if not labels:
        raise EmptyListError(list_path)
    paths = PathTable(np.frombuffer(blob, np.uint8), np.frombuffer(offsets, np.int64))  # no copies
    return VideoList(list_path=list_path, root=root, rel_paths=paths, labels=np.frombuffer(labels, np.int64),
                     line_nos=np.frombuffer(line_nos, np.int32))


def list_root(list_path: str, root: str = "") -> str:
    """The folder a list's relative paths are joined to where a tool reads a list on its own (``predict``,
    ``verify_data``, the benchmarks' ``--list``): ``root`` when given, else the list's own folder (absolute). A
    training run's lists are joined to DATA.ROOT instead."""
    return root or os.path.dirname(os.path.abspath(list_path))


def check_list_root(videos: VideoList, root_name: str, present: np.ndarray | None = None,
                    default: str = "") -> None:
    """Refuse a list every video of which would be missing, which indexing finds only after looking for each one
    (and would mark in a quarantine file): its root (named ``root_name``, e.g. ``DATA.ROOT``) is not a folder while
    its first path is relative to it, or none of its files exists where its paths lead (relative to another folder
    than the root, or, with an empty root, than the working folder). ``present``: ``VideoList.stat_keys``'s third
    column; without it the files are looked up only when the first one is missing (one stat for a good list).
    ``default``: what the root is when ``root_name`` was not set (e.g. "the list's own folder"), named instead of
    ``root_name = root``, which would claim a setting the user did not make.

    Raises:
        DataListError: naming the root, the list and its first path.
    """
    if not len(videos) or (os.path.exists(videos.path(0)) if present is None else present.any()):
        return
    first, root, listed = videos.rel_path(0), videos.root, f"the {len(videos)} videos listed in {videos.list_path}"
    named = f"{default} {root} (no {root_name} given)" if default else f"{root_name} = {root}"
    if root and not os.path.isabs(root):  # taken from where the command runs, which a job script may not expect
        named += f" (from the working folder {os.getcwd()})"
    if root and not os.path.isdir(root) and not os.path.isabs(first):
        raise DataListError(f"{named} is not an existing folder, and the paths of {videos.list_path} are relative "
                            f"to it (first: {first!r}): set {root_name} to the folder they are relative to")
    if present is None and videos.stat_keys()[2].any():  # its first file missing: are the others?
        return
    name, last = split_list_line(first) or ("", "")
    if last.isdigit() and os.path.exists(os.path.join(root, name)):  # not the root: a column too many
        raise DataListError(
            f"none of {listed} exists: the first path, {first!r}, is the file {name!r} and a number (a frame count "
            "column, as in mmaction2's lists?); a list line is '<path> <label>': remove that column")
    if "\\" in first and os.path.exists(os.path.join(root, first.replace("\\", "/"))):  # not the root either
        raise DataListError(f"none of {listed} exists: its paths use '\\' between folders, as on Windows (first: "
                            f"{first!r}): write them with '/'")
    fix = f"(first: {first!r}): set {root_name} to the folder its paths are relative to"
    real_list = os.path.realpath(videos.list_path)
    if (os.path.islink(videos.list_path) and not os.path.isabs(first)
            and os.path.exists(os.path.join(os.path.dirname(real_list), first))):
        # a list linked into another folder (lists/ beside the code): its paths are the target's folder's
        fix = (f"(first: {first!r}); {videos.list_path} is a symbolic link to {real_list}, whose folder holds "
               f"that file: set {root_name} to {os.path.dirname(real_list)}")
    if os.path.isabs(first):
        raise DataListError(f"none of {listed} exists (first: {first!r}; its paths are absolute)")
    if root:
        raise DataListError(f"{named} holds none of {listed}, whose paths are relative to it {fix}")
    raise DataListError(f"{root_name} is empty, and none of {listed} exists from the working folder {os.getcwd()} "
                        f"{fix}")


def split_list_line(line: str) -> tuple[str, str] | None:
    """A list line's file name and its last word (the label, in a training list), or None for a blank line. The
    name is the line up to the whitespace before that word, as written: inner runs of spaces and tabs are kept (the
    original re-joined the words with single spaces)."""
    tokens = line.split()
    if not tokens:
        return None
    return line.strip()[:-len(tokens[-1])].rstrip(), tokens[-1]


_LABEL_LIMIT = 2**63


def list_label(word: str) -> int | None:
    """The label a list line's last word gives (``int``'s reading, as the original's: ``7``, ``+7``, ``-1``), or None
    where it is no integer. Every reader of labelled lines takes its labels so."""
    try:
        return int(word)
    except ValueError:
        return None


def _label(tokens: list[str], line: str, where: str, num_classes: int | None, classes_name: str,
           first: bool = False) -> int:
    """The label of a list line split into ``tokens`` (DataListError naming ``where`` when it is not one);
    ``first``: the list's first line that is not blank, which may be a header."""
    if len(tokens) < 2:
        raise DataListError(f"{where}: expected '<relative path> <integer label>', got {line.strip()!r} (no label)")
    label = list_label(tokens[-1])
    if label is None:
        raise DataListError(f"{where}: label {tokens[-1]!r} is not an integer (line {line.strip()!r}): "
                            + _label_fix(tokens[-1], first))
    if num_classes is not None and not 0 <= label < num_classes:
        raise LabelRangeError(where, label, num_classes, line.strip(), classes_name)
    if not 0 <= label < _LABEL_LIMIT:  # labels are kept as int64
        raise DataListError(f"{where}: label {label} is outside [0, 2**63) (line {line.strip()!r})")
    return label


def _label_fix(word: str, first: bool) -> str:
    """What to do with a label ``word`` that is not an integer: a whole number written as a float (a table
    library's float column, as "3.0"), a header or comment line, which a list has not, or a label to fix."""
    try:
        number = float(word)
    except ValueError:
        number = None
    if number is not None and number.is_integer():
        return f"write it as {int(number)}"
    if first:
        return "a list has no header or comment lines: remove it, if it is one; else fix the label"
    return "fix the label"


def read_file_list(list_path: str, root: str, num_classes: int | None = None, *,
                   classes_name: str = "num_classes") -> list[ListEntry]:
    """Every entry of a list as a :class:`ListEntry`, in file order (``entries[i].row == i``); see
    :func:`read_video_list` for the format, ``classes_name`` and the errors. One object per line: for a long list,
    keep the :class:`VideoList` instead."""
    videos = read_video_list(list_path, root, num_classes, classes_name=classes_name)
    return [videos.entry(r) for r in range(len(videos))]
