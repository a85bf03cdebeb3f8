"""Scanning datasets of videos: class-folder trees ``<root>/{train,val}/<class name>/<video>``, or the flat folders
of the official downloads with their annotation CSVs (``annotations.py``), into the same ``Video`` records.

What a video's file name may be, and its YouTube id, are ``video_names.py``'s; which entries of a folder are videos,
why one is left out, and the ``Video`` record, ``video_files.py``'s.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from evautil.progress import ProgressLines, stderr_line

from .check import check_videos, save_checked
from .common import KineticsError, walk_progress
from .official import match_official
from .video_files import (SKIP_EMPTY, SKIP_KINDS, SKIP_MISSING, SKIP_OTHER_SPLIT,  # noqa: F401 (importable here)
                          SKIP_UNANNOTATED, SKIP_UNDECODABLE, SKIP_UNLISTABLE, SKIP_UNREADABLE, Video, own_file,
                          broken_link, in_other_case, refuse_missing_split, video_entries, video_skip)
from .video_files import own_file as _own_file  # noqa: F401 (its name here before it moved)
from .video_names import is_video_file, printable_path, unicode_form
from .video_names import is_listable, unlistable_reason, youtube_id  # noqa: F401 (importable here, as before the split)

if TYPE_CHECKING:
    from dali_pipelines.index import ProbedBefore
    from dali_pipelines.video_table import VideoTable

__all__ = ["SKIP_KINDS", "Video", "DatasetScan", "WalkedDataset", "video_entries", "video_skip", "scan_dataset",
           "walk_dataset", "finish_scan", "save_checked", "check_output_name"]


@dataclass
class DatasetScan:
    """Result of :func:`scan_dataset`.

    Attributes:
        name: dataset name (used as the output file prefix).
        root: absolute dataset root.
        classes: sorted class names; a class's label is its index here.
        videos: ``{"train": [...], "val": [...]}``, each in (class folder name, file name) order.
        skipped: ``(path, reason)`` for video files left out (empty, unreadable, undecodable, unlistable name,
            not in the annotations) and, in the annotated layout, annotated videos without a file (``missing``).
        ignored: paths of entries found where videos or class folders were expected that are neither (a video
            file beside the class folders too).
        found: ``{split: number of video files found}``, usable or not: ``len(videos[split])`` plus the split's
            skipped files (in the annotated layout the CSV rows without a file included).
        skipped_counts: ``{split: {kind: number of files skipped}}``, kinds from :data:`SKIP_KINDS`.
        probes: with ``check``, the training index's facts of every usable video (a ``VideoTable``), from which
            the lists' index caches are written; None without.
        probe_rows: ``{Video.path: row of probes}``.
        annotations: for the annotated layout, what the report says about it (CSV files, rows, rows without a
            video, rows of a video the other split lists too, videos found in the other split's folder); empty for a
            class-folder tree.
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
    annotations: dict = field(default_factory=dict)

    def found_in(self, split: str) -> int:
        """Video files found in ``split``, usable or not (a scan built by hand, without ``found``: the videos)."""
        return self.found.get(split, len(self.videos[split]))


def _scan_split(name: str, root: str, split: str, folder: str, underscore_to_space: bool,
                candidates: list[tuple[str, Video]], skipped: list[tuple[str, str]], ignored: list[str],
                counts: Counter, walk: ProgressLines | None = None) -> list[str]:
    """Walk ``<root>/<folder>/<class>/<file>``: usable videos go to ``candidates``, unusable files to ``skipped``
    with the reason (and to ``counts`` by kind), anything else to ``ignored``; ``walk`` counts each video file.
    Returns the split's sorted class names."""
    split_root = os.path.join(root, folder)
    _refuse_missing_split(name, split_root, folder, split)
    names_seen: dict[str, str] = {}
    by_nfc: dict[str, tuple[str, str]] = {}  # {NFC of a class name: (class name, folder)}
    with os.scandir(split_root) as it:
        entries = sorted(it, key=lambda e: e.name)
    loose: list[str] = []  # video files where class folders should be: the flat layout, for the message
    for entry in entries:
        if entry.name.startswith("."):
            continue
        # a class folder linked to storage that is not there (an unmounted disk) was a stray entry: its class
        # vanished from the labels and every later class's label shifted by one, without a word
        gone = _gone_class_folder(entry)
        if not gone and not entry.is_dir():
            if not own_file(entry.name):
                ignored.append(entry.path)
            if is_video_file(entry.name):
                loose.append(entry.path)
            continue
        cls = entry.name.replace("_", " ") if underscore_to_space else entry.name
        if cls in names_seen:
            raise KineticsError(f"dataset {name}: folders {names_seen[cls]!r} and {entry.path!r} both give "
                                f"class name {cls!r}")
        _refuse_other_unicode_form_in_split(name, split, cls, entry.path, by_nfc)
        names_seen[cls] = entry.path
        if gone:
            stderr_line(f"warning: dataset {name}: class folder {printable_path(entry.path)} is a symbolic link "
                        f"whose target {printable_path(os.readlink(entry.path))!r} is gone (or a link loop): class "
                        f"{cls!r} has no videos in {split}; mount or fix its target")
            continue
        for f in video_entries(entry.path, ignored):
            v = Video(name, split, cls, os.path.join(root, folder, entry.name, f.name))
            skip = video_skip(f, os.path.join(folder, entry.name, f.name))
            if walk is not None:
                walk.update()
            if skip is None:
                candidates.append((split, v))
            else:
                skipped.append((v.path, skip[0]))
                counts[skip[1]] += 1
    if names_seen and loose:  # left out of the lists; they were counted as the report's "non-video entries"
        stderr_line(f"warning: dataset {name}: {len(loose)} video file(s) in {split_root} lie outside any class "
                    f"folder and are left out of the lists (e.g. {printable_path(loose[0])}); move each into its "
                    f"class folder")
    if not names_seen:
        layout = (f"its {len(loose)} video files are the flat layout of the official downloads, read as such with "
                  f"--annotations {name}=DIR (by itself only when no split folder holds a subfolder)"
                  if loose else "a flat folder of videos needs its annotation CSVs: --annotations")
        raise KineticsError(f"dataset {name}: no class folders in {split_root!r}; {layout}")
    return sorted(names_seen)


def _refuse_other_unicode_form_in_split(name: str, split: str, cls: str, path: str,
                                        by_nfc: dict[str, tuple[str, str]]) -> None:
    """Two class folders of one split whose names differ only in their Unicode form (one written on macOS, in NFD)
    were two classes that look alike, each with part of the videos. ``by_nfc``: ``{NFC of a class name: (class
    name, folder)}`` so far, to which ``cls`` (in folder ``path``) is added."""
    other, other_path = by_nfc.setdefault(unicodedata.normalize("NFC", cls), (cls, path))
    if other != cls:
        raise KineticsError(f"dataset {name}: class folders {printable_path(other_path)!r} ({unicode_form(other)}) "
                            f"and {printable_path(path)!r} ({unicode_form(cls)}) of {split} differ only in their "
                            f"Unicode form, and would be two classes that look alike; keep one (the NFC one, as most "
                            f"systems write names): move the videos of the other into it and remove that folder")


def _gone_class_folder(entry: os.DirEntry) -> bool:
    """Whether a split folder's ``entry`` is a symbolic link to a folder that cannot be reached (its target gone, or
    a link loop), not named as a video file: a class folder whose videos are all missing."""
    return entry.is_symlink() and not os.path.exists(entry.path) and not is_video_file(entry.name)


def _refuse_missing_split(name: str, split_root: str, folder: str, split: str) -> None:
    refuse_missing_split(name, split_root, f"expected <root>/{folder}/<class name>/<video>, or the official "
                         f"downloads' flat <root>/{folder}/<youtube_id>_<start>_<end>.<ext>; --train-dir, --val-dir "
                         f"name others", split)


def _refuse_empty_classes(name: str, split_root: str, classes: list[str], videos: list[Video],
                          skipped: list[tuple[str, str]], where: str = "") -> None:
    """``where``: what the classes are, for the message (default: the class folders in ``split_root``)."""
    counts = Counter(v.class_name for v in videos)
    empty = [c for c in classes if counts[c] == 0]
    if empty:
        bad = [x for x in skipped if x[0].startswith(split_root + os.sep)]
        why = f"; {len(bad)} unusable file(s) were skipped in this split, e.g. {bad[0]}" if bad else ""
        raise KineticsError(
            f"dataset {name}: {len(empty)} {where or f'class folder(s) in {split_root!r}'} have no usable "
            f"video ({', '.join(repr(c) for c in empty[:5])}{' ...' if len(empty) > 5 else ''}){why}; "
            f"fix the download or pass --allow-empty-classes")


def _refuse_unusable(name: str, skipped: list[tuple[str, str]], strict: bool) -> None:
    """``--strict``: the files skipped so far are an error."""
    if strict and skipped:
        lines = "\n".join(f"  {printable_path(p)}: {printable_path(r)}" for p, r in skipped[:20])
        raise KineticsError(f"dataset {name}: {len(skipped)} unusable video file(s):\n{lines}")


def scan_dataset(name: str, root: str, *, train_dir: str = "train", val_dir: str = "val",
                 underscore_to_space: bool = False, check: bool = False, workers: int = 0, strict: bool = False,
                 allow_empty_classes: bool = False, progress: bool = False, progress_lines: bool = True,
                 before: "ProbedBefore | None" = None, partial_list: str | None = None,
                 official_labels: str | None = None, annotations: Mapping[str, str] | None = None) -> DatasetScan:
    """Scan ``<root>/{train,val}/<class>/<video>``, or the flat layout of the official downloads,
    ``<root>/{train,val}/<youtube_id>_<start:06d>_<end:06d>.<ext>`` with each split's annotation CSV
    (``tools.kinetics.annotations``): the same videos give the same ``Video`` records either way.

    Args:
        name: dataset name, e.g. ``k400``; letters, digits, ``-`` and ``_`` only (it becomes a file prefix).
        root: dataset root.
        train_dir, val_dir: folder names of the two splits under ``root``.
        underscore_to_space: class name = folder name (or annotation label) with ``_`` replaced by spaces (for
            downloads that write ``arm_wrestling``; the released heads use the names with spaces).
        check: probe every video as the training index does (it must open, hold frames, decode its first frame
            and not stop short of what its container declares); failures are skipped (or raise if strict), and
            the facts of the others are kept in ``probes`` for the lists' index caches.
        workers: processes for ``check``.
        strict: raise instead of skipping empty, unreadable or undecodable files.
        allow_empty_classes: accept class folders without usable videos (by default an error).
        progress: show a progress bar while checking.
        progress_lines: without a bar, plain progress lines on stderr (a long walk's, the check's every 30 s);
            False: none (``--no-progress``).
        before: with ``check``, what earlier checks recorded (``dali_pipelines.index.probed_before`` of their
            lists' index caches): videos unchanged since (same size and mtime) are not probed again.
        partial_list: with ``check``, a list path (the list itself is not written) whose index cache keeps the
            videos probed so far when the check is interrupted, or ends in a KineticsError (then its
            ``probes_kept`` is True), for ``before`` of the next check.
        official_labels: a folder with the released label files (``kinetics400_labels.csv``, ...): a k400/k600/
            k700 tree's class names are checked against them (without it, only their count).
        annotations: ``{split: annotation CSV}``: read the split folders as flat folders of videos whose classes
            those CSVs give (a split not named: ``<root>/annotations/<split>.csv``). None: the flat layout when
            no split folder holds a subfolder and some holds a video file, else class folders.

    Raises:
        KineticsError: missing root or split folder, no class folders, a missing or malformed annotation CSV, a
            class with no usable video, different class sets in the two splits, two folders mapping to the same
            class name, (strict) a bad file (in the annotated layout one that no CSV row names too), or
            for k400/k600/k700 another class count than the official one, or with ``official_labels`` class names
            other than the official ones (missing ones allowed with ``allow_empty_classes``: the labels keep their
            official ids). In the annotated layout CSV rows without a video file are reported (``missing``, or
            ``listed in the other split`` when the other split's CSV lists that video and its folder holds it),
            never an error, not even with ``strict``: every Kinetics download lacks some videos.
    """
    walked = walk_dataset(name, root, train_dir=train_dir, val_dir=val_dir, underscore_to_space=underscore_to_space,
                          strict=strict, allow_empty_classes=allow_empty_classes, progress_lines=progress_lines,
                          official_labels=official_labels, annotations=annotations)
    return finish_scan(walked, check=check, workers=workers, progress=progress, progress_lines=progress_lines,
                       before=before, partial_list=partial_list)


@dataclass
class WalkedDataset:
    """A dataset walked, and passed by every refusal that needs no probe (:func:`walk_dataset`); what
    :func:`finish_scan` needs of the arguments of :func:`scan_dataset`."""

    name: str
    root: str
    folders: dict[str, str]
    walked: _Walked
    classes: list[str]
    found: dict[str, int]
    strict: bool
    allow_empty_classes: bool


def walk_dataset(name: str, root: str, *, train_dir: str = "train", val_dir: str = "val",
                 underscore_to_space: bool = False, strict: bool = False, allow_empty_classes: bool = False,
                 progress_lines: bool = True, official_labels: str | None = None,
                 annotations: Mapping[str, str] | None = None) -> WalkedDataset:
    """The first half of :func:`scan_dataset` (same arguments): the walk, and each refusal that the folders or CSVs
    alone decide, so that it comes before --check probes a video (on Kinetics the probes take hours). A command over
    several datasets walks them all before it probes any."""
    root = _dataset_root(name, root)
    folders = {"train": train_dir, "val": val_dir}
    walked = _walk_splits(name, root, folders, underscore_to_space, annotations, progress_lines)
    found = walked.found()  # before --check moves the undecodable videos out of the candidates
    _refuse_different_classes(name, walked.class_sets, walked.sources)
    classes = match_official(name, root, walked.class_sets["train"], allow_empty_classes, official_labels,
                             walked.classes_from, walked.class_where)
    _refuse_unusable(name, walked.skipped, strict)
    if not allow_empty_classes:  # a class with no video found has none after the probes either
        _refuse_classes_without_videos(name, root, folders, walked, classes, walked.skipped + walked.absent)
    return WalkedDataset(name, root, folders, walked, classes, found, strict, allow_empty_classes)


def finish_scan(w: WalkedDataset, *, check: bool = False, workers: int = 0, progress: bool = False,
                progress_lines: bool = True, before: "ProbedBefore | None" = None,
                partial_list: str | None = None) -> DatasetScan:
    """The second half of :func:`scan_dataset` (same arguments): the probes of ``check``, and the refusals that
    follow from them."""
    name, root, walked = w.name, w.root, w.walked
    probes, probe_rows = None, {}
    if check and walked.candidates:
        probes, probe_rows = _probe_candidates(name, root, walked, workers, progress, before, partial_list,
                                               progress_lines)
    try:
        videos = _usable_videos(name, root, w.folders, walked, w.classes, w.strict, w.allow_empty_classes)
    except KineticsError as e:  # the probes of the videos still count: the fixed command probes none of them again
        if partial_list is not None and probes is not None and len(probes):
            try:
                save_checked(name, root, probes, probe_rows, partial_list, quiet=True)
            except OSError:  # not saved (a full disk): the error itself, not this one, says what to fix
                pass
            else:
                e.probes_kept = True  # the caller's error line says so
        raise
    return DatasetScan(name, root, w.classes, videos, walked.skipped, walked.ignored, w.found,
                       {split: {k: c[k] for k in SKIP_KINDS if c[k]} for split, c in walked.counts.items()}, probes,
                       probe_rows, walked.info)


def check_output_name(name: str, what: str = "dataset name") -> None:
    """Refuse a ``name`` that cannot prefix the files written into --out (a dataset's name, the merge's --name,
    ``what`` in the message): a '/' wrote them into a subfolder, '..' outside --out, an empty one ``_train.txt``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise KineticsError(f"{what} {name!r} must contain only letters, digits, '-' and '_'")


def _dataset_root(name: str, root: str) -> str:
    """The absolute ``root`` of dataset ``name``, once both are checked (the name becomes a file prefix)."""
    check_output_name(name)
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        why = broken_link(root, "folder") or "does not exist or is not a directory"
        raise KineticsError(f"dataset {name}: root {root!r} {why}")
    return root


@dataclass
class _Walked:
    """What the walk through a dataset's split folders found (:func:`_walk_splits`), before any probe.

    Attributes:
        csvs: ``{split: annotation CSV}`` in the annotated layout; None for class folders.
        class_sets: ``{split: sorted class names}``.
        candidates: ``(split, video)`` of the usable video files, in walk order.
        skipped, ignored: as :class:`DatasetScan`'s (the annotated videos without a file not yet among ``skipped``).
        counts: ``{split: Counter of the skip kinds}``.
        absent: ``(path, reason)`` of the annotated videos without a file, skipped after the ``--strict`` test.
        info: what the report says about the annotated layout (:attr:`DatasetScan.annotations`).
        sources: ``{split: what its classes come from}`` (folder or CSV), for messages.
        classes_from: what the classes are, for :func:`~tools.kinetics.official.match_official`'s messages.
        class_where: ``{class: "line <n> of <CSV>"}``, where an annotated class is first given; empty for folders.
    """

    csvs: dict[str, str] | None
    class_sets: dict[str, list[str]]
    candidates: list[tuple[str, Video]]
    skipped: list[tuple[str, str]]
    ignored: list[str]
    counts: dict[str, Counter]
    absent: list[tuple[str, str]]
    info: dict
    sources: dict[str, str]
    classes_from: str
    class_where: dict[str, str]

    def found(self) -> dict[str, int]:
        """Every video file found per split, usable or not, so that a report's "found" is written + skipped +
        dropped."""
        return {split: sum(1 for s, _ in self.candidates if s == split) + sum(self.counts[split].values())
                for split in self.counts}


def _walk_splits(name: str, root: str, folders: dict[str, str], underscore_to_space: bool,
                 annotations: Mapping[str, str] | None, progress_lines: bool) -> _Walked:
    """Walk the split ``folders`` of ``root``: class folders (:func:`_scan_split`), or the flat layout read with
    its annotation CSVs (``annotations.scan_annotated``), as :func:`scan_dataset` describes."""
    from .annotations import annotation_files, scan_annotated  # local: it builds on this module

    candidates: list[tuple[str, Video]] = []
    skipped: list[tuple[str, str]] = []
    ignored: list[str] = []
    counts: dict[str, Counter] = {"train": Counter(), "val": Counter()}
    csvs = annotation_files(name, root, folders, annotations)
    absent: list[tuple[str, str]] = []
    info: dict = {}
    class_where: dict[str, str] = {}  # class folders are named by their own path
    walk = walk_progress(f"scan {name}", "video file", lines=progress_lines)  # lines only when the walk takes long
    if csvs is None:
        # every split's folder first: a flat train/ beside a missing val/ was refused as "no class folders", with
        # --annotations to try, which then stopped at the missing val/
        for split, folder in folders.items():
            _refuse_missing_split(name, os.path.join(root, folder), folder, split)
        class_sets = {split: _scan_split(name, root, split, folder, underscore_to_space, candidates, skipped,
                                         ignored, counts[split], walk) for split, folder in folders.items()}
        sources, classes_from = dict(folders), "class folders"
    else:
        class_sets, absent, info, class_where = scan_annotated(name, root, folders, csvs, underscore_to_space,
                                                               candidates, skipped, ignored, counts, walk,
                                                               progress_lines)
        sources, classes_from = dict(csvs), "annotated classes"
    walk.finish()
    return _Walked(csvs, class_sets, candidates, skipped, ignored, counts, absent, info, sources, classes_from,
                   class_where)


def _refuse_different_classes(name: str, class_sets: dict[str, list[str]], sources: dict[str, str]) -> None:
    """Train and val must have the same classes, or their labels would disagree."""
    if class_sets["train"] != class_sets["val"]:
        only_t = sorted(set(class_sets["train"]) - set(class_sets["val"]))
        only_v = sorted(set(class_sets["val"]) - set(class_sets["train"]))
        _refuse_other_unicode_forms(name, only_t, only_v, sources)
        raise KineticsError(f"dataset {name}: train and val have different classes (labels would disagree); "
                            f"only in {sources['train']}: {only_t[:10]}{' ...' if len(only_t) > 10 else ''}, "
                            f"only in {sources['val']}: {only_v[:10]}{' ...' if len(only_v) > 10 else ''}")


def _refuse_other_unicode_forms(name: str, only_t: list[str], only_v: list[str], sources: dict[str, str]) -> None:
    """Class names of train and val that differ only in their Unicode form (a split unpacked on macOS writes NFD):
    "only in train: ['crème'], only in val: ['crème']" showed the same name on both sides. They are not matched by
    their NFC form: the labels file, the lists' paths and the released class names all compare names as written."""
    by_nfc = {unicodedata.normalize("NFC", c): c for c in only_v}
    pairs = [(t, by_nfc[nfc]) for t in only_t if (nfc := unicodedata.normalize("NFC", t)) in by_nfc]
    if pairs:
        named = ", ".join(f"{t!r} ({unicode_form(t)}) in {sources['train']} and {v!r} ({unicode_form(v)}) in "
                          f"{sources['val']}" for t, v in pairs[:5])
        raise KineticsError(f"dataset {name}: {len(pairs)} class name(s) of train and val differ only in their "
                            f"Unicode form: {named}{' ...' if len(pairs) > 5 else ''}; rename one of each pair so both "
                            f"splits spell it alike (in NFC, as most systems write names; macOS unpacks names in NFD)")


def _probe_candidates(name: str, root: str, walked: _Walked, workers: int, progress: bool,
                      before: "ProbedBefore | None", partial_list: str | None,
                      progress_lines: bool) -> tuple[VideoTable, dict[str, int]]:
    """``--check``: probe the candidates as the training index does (:func:`~tools.kinetics.check.check_videos`).
    Those that fail move to ``walked.skipped`` (counted undecodable); the others stay candidates, and their facts
    are returned with ``{Video.path: row}``."""
    table, reasons = check_videos(name, walked.candidates, workers, progress, before, root, partial_list,
                                  progress_lines)
    good, probe_rows = [], {}
    for (split, v), reason in zip(walked.candidates, reasons):
        if reason is None:
            probe_rows[v.path] = len(good)
            good.append((split, v))
        else:
            walked.skipped.append((v.path, reason))
            walked.counts[split][SKIP_UNDECODABLE] += 1
    walked.candidates = good
    return table.take(np.asarray([i for i, r in enumerate(reasons) if r is None], np.int64)), probe_rows


def _usable_videos(name: str, root: str, folders: dict[str, str], walked: _Walked, classes: list[str],
                   strict: bool, allow_empty_classes: bool) -> dict[str, list[Video]]:
    """The candidates by split, once the last refusals pass: ``--strict`` with files skipped (undecodable ones
    included), and classes without a usable video. The annotated videos without a file join ``walked.skipped``."""
    _refuse_unusable(name, walked.skipped, strict)
    walked.skipped.extend(walked.absent)
    if not allow_empty_classes:  # those the probes left without a usable video
        _refuse_classes_without_videos(name, root, folders, walked, classes, walked.skipped)
    return _by_split(walked.candidates)


def _by_split(candidates: list[tuple[str, Video]]) -> dict[str, list[Video]]:
    videos: dict[str, list[Video]] = {"train": [], "val": []}
    for split, v in candidates:
        videos[split].append(v)
    return videos


def _refuse_classes_without_videos(name: str, root: str, folders: dict[str, str], walked: _Walked,
                                   classes: list[str], skipped: list[tuple[str, str]]) -> None:
    """A class of either split none of whose ``walked.candidates`` is a video; ``skipped``: the files left out so
    far, for the message."""
    videos = _by_split(walked.candidates)
    for split, folder in folders.items():
        where = f"annotated class(es) of {walked.csvs[split]!r}" if walked.csvs else ""
        _refuse_empty_classes(name, os.path.join(root, folder), classes, videos[split], skipped, where)
