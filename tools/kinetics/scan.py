"""Scanning class-folder trees ``<root>/{train,val}/<class name>/<video>`` into datasets of videos.

Kinetics file names are ``<11-character YouTube id>_<start>_<end>.<ext>``; the YouTube id (the first 11
characters) is the de-duplication key of the lists and of the Kinetics-722 merge.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from evautil.progress import stderr_line
from evautil.workers import WorkerTimeoutError

from .common import KineticsError

if TYPE_CHECKING:
    from dali_pipelines.index import ProbedBefore
    from dali_pipelines.index_store import VideoTable

__all__ = ["VIDEO_EXTENSIONS", "YOUTUBE_ID_LEN", "SKIP_KINDS", "Video", "DatasetScan", "youtube_id", "is_video_file",
           "unlistable_reason", "is_listable", "printable_path", "scan_dataset"]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
# Class counts of the releases whose labels must match the released heads (ids = the classes' sorted order).
OFFICIAL_CLASS_COUNTS = {"k400": 400, "k600": 600, "k700": 700}

YOUTUBE_ID_LEN = 11

# Why a video file found in a split is left out of the lists (the per-split counts of DatasetScan.skipped_counts);
# each skipped file's own reason, in DatasetScan.skipped, says more.
SKIP_MISSING, SKIP_EMPTY, SKIP_UNREADABLE, SKIP_UNLISTABLE, SKIP_UNDECODABLE = (
    "missing", "empty", "unreadable", "name not listable", "undecodable (--check)")
SKIP_KINDS = (SKIP_MISSING, SKIP_EMPTY, SKIP_UNREADABLE, SKIP_UNLISTABLE, SKIP_UNDECODABLE)

@dataclass(frozen=True)
class Video:
    """One video file of a dataset split.

    Attributes:
        dataset: dataset name given on the command line (e.g. ``k400``).
        split: ``train`` or ``val`` (the role, whatever the folder is called).
        class_name: class name (the folder name, possibly with underscores turned into spaces).
        path: absolute path (``os.path.abspath``, symlinks kept so paths stay under the data root).
    """

    dataset: str
    split: str
    class_name: str
    path: str

    @property
    def file_name(self) -> str:
        return os.path.basename(self.path)

    @property
    def youtube_id(self) -> str:
        return youtube_id(self.file_name)


@dataclass
class DatasetScan:
    """Result of :func:`scan_dataset`.

    Attributes:
        name: dataset name (used as the output file prefix).
        root: absolute dataset root.
        classes: sorted class names; a class's label is its index here.
        videos: ``{"train": [...], "val": [...]}``, each in (class folder name, file name) order.
        skipped: ``(path, reason)`` for video files left out (empty, unreadable, undecodable, unlistable name).
        ignored: paths of non-video entries found where videos or class folders were expected.
        found: ``{split: number of video files found}``, usable or not: ``len(videos[split])`` plus the split's
            skipped files.
        skipped_counts: ``{split: {kind: number of files skipped}}``, kinds from :data:`SKIP_KINDS`.
        probes: with ``check``, the training index's facts of every usable video (a ``VideoTable``), from which
            the lists' index caches are written; None without.
        probe_rows: ``{Video.path: row of probes}``.
    """

    name: str
    root: str
    classes: list[str]
    videos: dict[str, list[Video]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    found: dict[str, int] = field(default_factory=dict)
    skipped_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    probes: VideoTable | None = None
    probe_rows: dict[str, int] = field(default_factory=dict)

    def found_in(self, split: str) -> int:
        """Video files found in ``split``, usable or not (a scan built by hand, without ``found``: the videos)."""
        return self.found.get(split, len(self.videos[split]))


def youtube_id(file_name: str) -> str:
    """YouTube id of a Kinetics file name: its first 11 characters (``<id>_<start>_<end>.mp4``).

    A stem shorter than 11 characters is returned whole, so such files still de-duplicate against themselves.
    """
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return stem[:YOUTUBE_ID_LEN]


def is_video_file(name: str) -> bool:
    """True for a non-hidden file name with one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def unlistable_reason(rel_path: str) -> str | None:
    """None when the list line ``<rel_path> <label>`` reads back as ``rel_path``, else why it would not.

    The rule is the list reader's (``dali_pipelines.filelist.read_video_list``): the list is UTF-8 text (a BOM at
    its start dropped), cut into lines by ``str.splitlines``, and a line's file name is the line, stripped, up to
    the whitespace before its last word (the label). So runs of spaces, tabs and other whitespace inside a name
    come back as written, and so does a name ending in `` <digits>``; what cannot come back is checked here.
    tests/test_prepare_kinetics.py checks this function against the reader itself.
    """
    if not rel_path:
        return "empty path"
    try:
        rel_path.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir gives undecodable bytes as surrogates; lists are UTF-8 text
        return "name is not valid UTF-8, and a video list is UTF-8 text"
    if rel_path.splitlines() != [rel_path]:  # the reader would cut it into two lines
        breaks = sorted({c for c in rel_path if (c + "x").splitlines() != [c + "x"]})
        return f"name holds a line break ({', '.join(repr(c) for c in breaks)}), which would split its list line"
    if rel_path.strip() != rel_path:
        return "path starts or ends with whitespace, which the list reader strips"
    if rel_path.startswith("\ufeff"):  # dropped by the reader as a byte-order mark when on the list's first line
        return "path starts with U+FEFF, which the list reader drops as a byte-order mark"
    return None


def is_listable(rel_path: str) -> bool:
    """True when ``rel_path`` survives a list line unchanged (:func:`unlistable_reason` is None)."""
    return unlistable_reason(rel_path) is None


def printable_path(path: str) -> str:
    """``path`` as one line of UTF-8 text, for messages and reports that name a skipped file: bytes that are not
    UTF-8 shown as ``\\xNN``, line breaks and other control characters escaped (``\\n``)."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _save_probed_so_far(name: str, root: str, candidates: list[tuple[str, Video]], table: "VideoTable",
                        partial_list: str) -> None:
    """An interrupted ``--check``: the good rows probed (or reused) so far go to the index cache of
    ``partial_list``, where the next check into the same ``--out`` finds them (``probed_before``)."""
    from dali_pipelines.index import save_probed_index
    from dali_pipelines.index_store import GOOD

    rows = np.flatnonzero(table.status == GOOD)
    if not len(rows):
        return
    os.makedirs(os.path.dirname(os.path.abspath(partial_list)), exist_ok=True)
    path = save_probed_index(partial_list, root, [os.path.relpath(candidates[r][1].path, root) for r in rows.tolist()],
                             table.take(rows.astype(np.int64)))
    stderr_line(f"check {name}: saved the {len(rows):,} usable videos probed so far in {path}")


def _check_videos(name: str, candidates: list[tuple[str, Video]], workers: int, progress: bool,
                  before: "ProbedBefore | None" = None, root: str = "",
                  partial_list: str | None = None) -> tuple["VideoTable", list[str | None]]:
    """``--check``: probe every candidate with the training index's own probe; returns a table with the facts of
    the good ones (row i: ``candidates[i]``, UNKNOWN where bad) and each candidate's reason to be skipped (None:
    good).

    The index's probe decodes the first frame, as the check did on its own before, and also reads what the index
    keeps (frame count, size, codec, decoder facts) and finds truncated streams, which the index would quarantine:
    one pass gives both the check's verdict and the rows of the lists' index caches, so that the first training
    run (or verify_data) probes none of the videos again. A video that ``before`` (the caches an earlier check
    wrote) records with its current size and mtime is not probed again: its recorded facts are kept. A check
    stopped by Ctrl-C or a stop signal first saves what it probed in ``partial_list``'s index cache."""
    from dali_pipelines import index  # local: scanning without --check must not need PyAV
    from dali_pipelines.index_store import VideoInfo, VideoTable

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
    probes = index.probe_videos(jobs, max(1, workers), progress, f"check {name}", log=stderr_line,
                                timeout_s=index.PROBE_TIMEOUT_S)
    try:
        for row, info, reason in probes:
            if info is None:
                reasons[row] = reason or "unreadable"
            else:
                table.set_good(row, VideoInfo.from_record(info), False)
    except WorkerTimeoutError as e:  # every file hangs: the storage, not the videos; nothing is written
        raise KineticsError(f"dataset {name}: --check stopped: {e}") from e
    except BaseException:  # Ctrl-C or a stop signal (evautil.interrupt.Stopped): keep what was probed
        probes.close()  # ends the workers first
        if partial_list is not None:
            _save_probed_so_far(name, root, candidates, table, partial_list)
        raise
    return table, reasons


def _scan_split(name: str, root: str, split: str, folder: str, underscore_to_space: bool,
                candidates: list[tuple[str, Video]], skipped: list[tuple[str, str]], ignored: list[str],
                counts: Counter) -> list[str]:
    """Walk ``<root>/<folder>/<class>/<file>``: usable videos go to ``candidates``, unusable files to ``skipped``
    with the reason (and to ``counts`` by kind), anything else to ``ignored``. Returns the split's sorted class
    names."""
    split_root = os.path.join(root, folder)
    if not os.path.isdir(split_root):
        raise KineticsError(f"dataset {name}: split folder {split_root!r} does not exist "
                            f"(expected <root>/{folder}/<class name>/<video>)")
    names_seen: dict[str, str] = {}
    with os.scandir(split_root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            ignored.append(entry.path)
            continue
        cls = entry.name.replace("_", " ") if underscore_to_space else entry.name
        if cls in names_seen:
            raise KineticsError(f"dataset {name}: folders {names_seen[cls]!r} and {entry.path!r} both give "
                                f"class name {cls!r}")
        names_seen[cls] = entry.path
        with os.scandir(entry.path) as it:
            files = sorted(it, key=lambda e: e.name)
        for f in files:
            # A video's name whose symlink target is gone (a moved or half-synced download) is a missing video,
            # not a non-video entry.
            dangling = is_video_file(f.name) and f.is_symlink() and not os.path.exists(f.path)
            if not dangling and (not is_video_file(f.name) or not f.is_file()):
                if not f.name.startswith("."):
                    ignored.append(f.path)
                continue
            v = Video(name, split, cls, os.path.join(root, folder, entry.name, f.name))
            reason = kind = None
            if dangling:
                reason, kind = f"missing: dangling symlink (to {os.readlink(f.path)!r})", SKIP_MISSING
            elif f.stat().st_size == 0:
                reason, kind = "empty file (0 bytes)", SKIP_EMPTY
            elif not os.access(f.path, os.R_OK):
                reason, kind = "not readable (permission denied)", SKIP_UNREADABLE
            else:
                why = unlistable_reason(os.path.join(folder, entry.name, f.name))
                if why is not None:
                    reason, kind = f"cannot be written to a video list: {why}", SKIP_UNLISTABLE
            if reason is None:
                candidates.append((split, v))
            else:
                skipped.append((v.path, reason))
                counts[kind] += 1
    if not names_seen:
        raise KineticsError(f"dataset {name}: no class folders in {split_root!r}")
    return sorted(names_seen)


def official_classes(name: str, labels_dir: str | None) -> list[str] | None:
    """The official class names of dataset ``name`` (k400, k600, k700, any case) in label order, from the released
    label file in ``labels_dir`` (``kinetics400_labels.csv`` as the original release names it, or
    ``k400_labels.csv``); None for other datasets or without ``labels_dir``.

    Raises:
        KineticsError: ``labels_dir`` is given but is not a folder or holds neither file for ``name``."""
    if labels_dir is None or name.lower() not in OFFICIAL_CLASS_COUNTS:
        return None
    if not os.path.isdir(labels_dir):
        raise KineticsError(f"--official-labels {labels_dir!r} is not a folder")
    from .lists import read_labels_csv

    names = (f"kinetics{name.lower()[1:]}_labels.csv", f"{name.lower()}_labels.csv")
    for file_name in names:
        path = os.path.join(labels_dir, file_name)
        if os.path.isfile(path):
            return read_labels_csv(path)
    # asked for, and silently absent, the check would fall back to the class count alone
    raise KineticsError(f"--official-labels {labels_dir!r} holds no {' or '.join(names)} for dataset {name}")


def _match_official(name: str, root: str, classes: list[str], allow_empty_classes: bool,
                    labels_dir: str | None) -> list[str]:
    """The classes whose positions are the labels: ``classes``, or for k400/k600/k700 the official list, which the
    tree's class names must match (a missing folder would shift every later label by one); with
    ``allow_empty_classes`` a missing class is an empty one and every label keeps its official id. Without the
    released list (``labels_dir``) only the class count can be checked: another count is an error."""
    official = official_classes(name, labels_dir)
    expected = OFFICIAL_CLASS_COUNTS.get(name.lower())
    if official is None:
        if expected is None or expected == len(classes):
            return classes
        raise KineticsError(
            f"dataset {name}: {len(classes)} class folders in {root!r}, the official {name} has {expected}, and every "
            f"label after a missing or extra class would shift; pass --official-labels DIR (the released "
            f"kinetics{name.lower()[1:]}_labels.csv) to name the difference and, with --allow-empty-classes, keep "
            f"the official ids, or give the dataset another name (e.g. {name}sub=PATH) to number its own classes")
    if classes == official:
        return classes
    have, known = set(classes), set(official)
    missing = [c for c in official if c not in have]
    unexpected = [c for c in classes if c not in known]
    if missing and not unexpected and allow_empty_classes:
        return official

    def some(names: list[str]) -> str:
        return f"{len(names)} ({', '.join(repr(c) for c in names[:5])}{', ...' if len(names) > 5 else ''})"

    hint = ("fix the download, or pass --allow-empty-classes to keep the official ids (the missing classes get no "
            "videos)" if not unexpected else
            "rename those folders (folder names with '_': --underscore-to-space), or give the dataset another name "
            f"(e.g. {name}sub=PATH) to number its own classes 0..N-1")
    diff = "; ".join(f"{what}: {some(c)}" for what, c in (("missing", missing), ("unexpected", unexpected)) if c)
    raise KineticsError(f"dataset {name}: the class folders in {root!r} differ from the {len(official)} official "
                        f"{name} classes, and every label after a difference would shift; {diff}; {hint}")


def _refuse_empty_classes(name: str, split_root: str, classes: list[str], videos: list[Video],
                          skipped: list[tuple[str, str]]) -> None:
    counts = Counter(v.class_name for v in videos)
    empty = [c for c in classes if counts[c] == 0]
    if empty:
        n_bad = sum(1 for p, _ in skipped if p.startswith(split_root + os.sep))
        why = f"; {n_bad} unusable file(s) were skipped in this split, e.g. {skipped[0]}" if n_bad else ""
        raise KineticsError(
            f"dataset {name}: {len(empty)} class folder(s) in {split_root!r} have no usable "
            f"video ({', '.join(repr(c) for c in empty[:5])}{' ...' if len(empty) > 5 else ''}){why}; "
            f"fix the download or pass --allow-empty-classes")


def scan_dataset(name: str, root: str, *, train_dir: str = "train", val_dir: str = "val",
                 underscore_to_space: bool = False, check: bool = False, workers: int = 0, strict: bool = False,
                 allow_empty_classes: bool = False, progress: bool = False,
                 before: "ProbedBefore | None" = None, partial_list: str | None = None,
                 official_labels: str | None = None) -> DatasetScan:
    """Scan ``<root>/{train,val}/<class>/<video>``.

    Args:
        name: dataset name, e.g. ``k400``; letters, digits, ``-`` and ``_`` only (it becomes a file prefix).
        root: dataset root.
        train_dir, val_dir: folder names of the two splits under ``root``.
        underscore_to_space: class name = folder name with ``_`` replaced by spaces (for downloads that write
            ``arm_wrestling``; the released heads use the names with spaces).
        check: probe every video as the training index does (it must open, hold frames, decode its first frame
            and not stop short of what its container declares); failures are skipped (or raise if strict), and
            the facts of the others are kept in ``probes`` for the lists' index caches.
        workers: processes for ``check``.
        strict: raise instead of skipping empty, unreadable or undecodable files.
        allow_empty_classes: accept class folders without usable videos (by default an error).
        progress: show a progress bar while checking.
        before: with ``check``, what earlier checks recorded (``dali_pipelines.index.probed_before`` of their
            lists' index caches): videos unchanged since (same size and mtime) are not probed again.
        partial_list: with ``check``, a list path (the list itself is not written) whose index cache keeps the
            videos probed so far when the check is interrupted, for ``before`` of the next check.
        official_labels: a folder with the released label files (``kinetics400_labels.csv``, ...): a k400/k600/
            k700 tree's class names are checked against them (without it, only their count).

    Raises:
        KineticsError: missing root or split folder, no class folders, a class with no usable video, different
            class sets in the two splits, two folders mapping to the same class name, (strict) a bad file, or
            for k400/k600/k700 another class count than the official one, or with ``official_labels`` class names
            other than the official ones (missing ones allowed with ``allow_empty_classes``: the labels keep their
            official ids).
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise KineticsError(f"dataset name {name!r} must contain only letters, digits, '-' and '_'")
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise KineticsError(f"dataset {name}: root {root!r} does not exist or is not a directory")

    videos: dict[str, list[Video]] = {"train": [], "val": []}
    class_sets: dict[str, list[str]] = {}
    candidates: list[tuple[str, Video]] = []
    skipped: list[tuple[str, str]] = []
    ignored: list[str] = []
    counts: dict[str, Counter] = {"train": Counter(), "val": Counter()}
    for split, folder in (("train", train_dir), ("val", val_dir)):
        class_sets[split] = _scan_split(name, root, split, folder, underscore_to_space, candidates, skipped, ignored,
                                        counts[split])
    # Every video file found, usable or not, so that a report's "found" is written + skipped + dropped.
    found = {split: sum(1 for s, _ in candidates if s == split) + sum(counts[split].values()) for split in counts}

    probes, probe_rows = None, {}
    if check and candidates:
        table, reasons = _check_videos(name, candidates, workers, progress, before, root, partial_list)
        good = []
        for (split, v), reason in zip(candidates, reasons):
            if reason is None:
                probe_rows[v.path] = len(good)
                good.append((split, v))
            else:
                skipped.append((v.path, reason))
                counts[split][SKIP_UNDECODABLE] += 1
        probes = table.take(np.asarray([i for i, r in enumerate(reasons) if r is None], np.int64))
        candidates = good
    if strict and skipped:
        lines = "\n".join(f"  {printable_path(p)}: {r}" for p, r in skipped[:20])
        raise KineticsError(f"dataset {name}: {len(skipped)} unusable video file(s):\n{lines}")
    for split, v in candidates:
        videos[split].append(v)

    if class_sets["train"] != class_sets["val"]:
        only_t = sorted(set(class_sets["train"]) - set(class_sets["val"]))
        only_v = sorted(set(class_sets["val"]) - set(class_sets["train"]))
        raise KineticsError(f"dataset {name}: train and val have different classes (labels would disagree); "
                            f"only in {train_dir}: {only_t[:10]}{' ...' if len(only_t) > 10 else ''}, "
                            f"only in {val_dir}: {only_v[:10]}{' ...' if len(only_v) > 10 else ''}")
    classes = _match_official(name, root, class_sets["train"], allow_empty_classes, official_labels)
    if not allow_empty_classes:
        for split, folder in (("train", train_dir), ("val", val_dir)):
            _refuse_empty_classes(name, os.path.join(root, folder), classes, videos[split], skipped)
    return DatasetScan(name, root, classes, videos, skipped, ignored, found,
                       {split: {k: c[k] for k in SKIP_KINDS if c[k]} for split, c in counts.items()}, probes,
                       probe_rows)
