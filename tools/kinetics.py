"""Kinetics dataset preparation: file lists, label CSVs, the merged Kinetics-722 and short-GOP H.264 re-encoding.

This is the library behind ``tools/prepare_kinetics.py``. It replaces the original project's notebook, whose
"drop leaked K400 train" step printed a message but never filtered anything (SPEC.md section 6).

Input layout, for any of Kinetics-400/600/700::

    <root>/train/<class name>/<video>     <root>/val/<class name>/<video>

Outputs, in the original list format (``<path relative to DATA.ROOT> <label>``, one video per line):

* ``<name>_train.txt``, ``<name>_val.txt``, ``<name>_labels.csv`` (``id,name``) per dataset, labels = position of
  the class in the sorted class names of that dataset;
* ``k722_train.txt``, ``k722_val.txt``, ``k722_labels.csv``: the union of the datasets' classes (label = index in
  the sorted union), training videos de-duplicated by YouTube id and with every id that occurs in any validation
  set removed; ``k722_to_<name>_mapping.npy``: int64 arrays, one K722 id per class of ``<name>`` in that dataset's
  label order, i.e. ``head_722[mapping]`` is the dataset's head (what ``MODEL.CLASS_MAPPING`` reads);
* a JSON and a markdown report saying what was dropped and why.

Kinetics file names are ``<11-character YouTube id>_<start>_<end>.<ext>``; the YouTube id (the first 11
characters) is the de-duplication key, because the same YouTube video appears in several Kinetics releases,
sometimes in the training split of one and the validation split of another.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "VIDEO_EXTENSIONS", "CLASS_ALIASES", "KineticsError", "Video", "DatasetScan", "K722Result", "EncodeSettings",
    "youtube_id", "is_video_file", "scan_dataset", "class_labels", "write_labels_csv", "read_labels_csv",
    "format_list_line", "dataset_list_lines", "canonical_class_name", "build_k722", "class_mapping",
    "prepare_lists", "prepare_k722", "check_h264_encoder", "count_frames", "probe_output", "reencode_video",
    "plan_reencode", "reencode_tree",
]

# File extensions treated as videos (compared case-insensitively).
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")

# Classes that Kinetics renamed between releases. The released Kinetics-722 head (722 classes, not the 725 raw
# folder names of K400 + K600 + K700) merges each pair under the newer name, so the K722 union maps the old name
# onto the new one. Renaming keeps every dataset's alphabetical order, so the mappings stay ascending.
CLASS_ALIASES: dict[str, str] = {
    "changing wheel": "changing wheel (not on bike)",                         # K400 -> K600/K700
    "cooking sausages": "cooking sausages (not on barbeque)",                 # K400 -> K600/K700
    "passing american football (not in game)": "passing American football (not in game)",  # K600 -> K400/K700
}

YOUTUBE_ID_LEN = 11


class KineticsError(ValueError):
    """Bad input for dataset preparation (missing root, empty class, unreadable file, ...); the message names it."""


# ----------------------------------------------------------------------------------------------------------------
# Scanning class-folder trees
# ----------------------------------------------------------------------------------------------------------------

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
    """

    name: str
    root: str
    classes: list[str]
    videos: dict[str, list[Video]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def youtube_id(file_name: str) -> str:
    """YouTube id of a Kinetics file name: its first 11 characters (``<id>_<start>_<end>.mp4``).

    A stem shorter than 11 characters is returned whole, so such files still de-duplicate against themselves.
    """
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return stem[:YOUTUBE_ID_LEN]


def is_video_file(name: str) -> bool:
    """True for a non-hidden file name with one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def _listable(rel_path: str) -> bool:
    # The list format splits a line on whitespace and re-joins the path tokens with single spaces, so a path with
    # tabs, newlines, leading/trailing or repeated spaces would come back as a different path.
    return " ".join(rel_path.split()) == rel_path


def _probe_first_frame(path: str) -> str | None:
    """Open ``path`` with PyAV and decode one frame; None when fine, else the reason."""
    import av  # local: scanning without --check must not need PyAV

    try:
        with av.open(path) as container:
            if not container.streams.video:
                return "no video stream"
            for _ in container.decode(video=0):
                return None
            return "no decodable frame"
    except Exception as e:  # FFmpeg raises many error types for broken files; all mean "unreadable" here
        return f"cannot decode: {type(e).__name__}: {e}"


def _map(fn: Callable, items: Sequence, workers: int, desc: str, progress: bool) -> list:
    """``[fn(x) for x in items]``, in ``workers`` processes when workers > 1, with an optional progress bar."""
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


def scan_dataset(name: str, root: str, *, train_dir: str = "train", val_dir: str = "val",
                 underscore_to_space: bool = False, check: bool = False, workers: int = 0, strict: bool = False,
                 allow_empty_classes: bool = False, progress: bool = False) -> DatasetScan:
    """Scan ``<root>/{train,val}/<class>/<video>``.

    Args:
        name: dataset name, e.g. ``k400``; letters, digits, ``-`` and ``_`` only (it becomes a file prefix).
        root: dataset root.
        train_dir, val_dir: folder names of the two splits under ``root``.
        underscore_to_space: class name = folder name with ``_`` replaced by spaces (for downloads that write
            ``arm_wrestling``; the released heads use the names with spaces).
        check: open every video with PyAV and decode its first frame; failures are skipped (or raise if strict).
        workers: processes for ``check``.
        strict: raise instead of skipping empty, unreadable or undecodable files.
        allow_empty_classes: accept class folders without usable videos (by default an error).
        progress: show a progress bar while checking.

    Raises:
        KineticsError: missing root or split folder, no class folders, a class with no usable video, different
            class sets in the two splits, two folders mapping to the same class name, or (strict) a bad file.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise KineticsError(f"dataset name {name!r} must contain only letters, digits, '-' and '_'")
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise KineticsError(f"dataset {name}: root {root!r} does not exist or is not a directory")

    videos: dict[str, list[Video]] = {}
    class_sets: dict[str, list[str]] = {}
    candidates: list[tuple[str, Video]] = []
    skipped: list[tuple[str, str]] = []
    ignored: list[str] = []
    for split, folder in (("train", train_dir), ("val", val_dir)):
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
                if not is_video_file(f.name) or not f.is_file():
                    if not f.name.startswith("."):
                        ignored.append(f.path)
                    continue
                v = Video(name, split, cls, os.path.join(root, folder, entry.name, f.name))
                reason = None
                if f.stat().st_size == 0:
                    reason = "empty file (0 bytes)"
                elif not os.access(f.path, os.R_OK):
                    reason = "not readable (permission denied)"
                elif not _listable(os.path.join(folder, entry.name, f.name)):
                    reason = "path has whitespace the list format cannot represent (tab, newline, repeated spaces)"
                if reason is None:
                    candidates.append((split, v))
                else:
                    skipped.append((v.path, reason))
        if not names_seen:
            raise KineticsError(f"dataset {name}: no class folders in {split_root!r}")
        class_sets[split] = sorted(names_seen)
        videos[split] = []

    if check and candidates:
        reasons = _map(_probe_first_frame, [v.path for _, v in candidates], workers, f"check {name}", progress)
        good = []
        for (split, v), reason in zip(candidates, reasons):
            if reason is None:
                good.append((split, v))
            else:
                skipped.append((v.path, reason))
        candidates = good
    if strict and skipped:
        lines = "\n".join(f"  {p}: {r}" for p, r in skipped[:20])
        raise KineticsError(f"dataset {name}: {len(skipped)} unusable video file(s):\n{lines}")
    for split, v in candidates:
        videos[split].append(v)

    if class_sets["train"] != class_sets["val"]:
        only_t = sorted(set(class_sets["train"]) - set(class_sets["val"]))
        only_v = sorted(set(class_sets["val"]) - set(class_sets["train"]))
        raise KineticsError(f"dataset {name}: train and val have different classes (labels would disagree); "
                            f"only in {train_dir}: {only_t[:10]}{' ...' if len(only_t) > 10 else ''}, "
                            f"only in {val_dir}: {only_v[:10]}{' ...' if len(only_v) > 10 else ''}")
    classes = class_sets["train"]
    if not allow_empty_classes:
        for split, folder in (("train", train_dir), ("val", val_dir)):
            counts = Counter(v.class_name for v in videos[split])
            empty = [c for c in classes if counts[c] == 0]
            if empty:
                split_root = os.path.join(root, folder)
                n_bad = sum(1 for p, _ in skipped if p.startswith(split_root + os.sep))
                why = f"; {n_bad} unusable file(s) were skipped in this split, e.g. {skipped[0]}" if n_bad else ""
                raise KineticsError(
                    f"dataset {name}: {len(empty)} class folder(s) in {split_root!r} have no usable "
                    f"video ({', '.join(repr(c) for c in empty[:5])}{' ...' if len(empty) > 5 else ''}){why}; "
                    f"fix the download or pass --allow-empty-classes")
    return DatasetScan(name, root, classes, videos, skipped, ignored)


# ----------------------------------------------------------------------------------------------------------------
# Labels and list files
# ----------------------------------------------------------------------------------------------------------------

def class_labels(names: Iterable[str]) -> dict[str, int]:
    """``{name: index in sorted(set(names))}``: the label convention of every list this module writes."""
    return {n: i for i, n in enumerate(sorted(set(names)))}


def write_labels_csv(path: str, names: Sequence[str]) -> None:
    """Write ``id,name`` rows for ``sorted(names)`` (ids 0..n-1)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(_labels_csv_text(names))


def _labels_csv_text(names: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "name"])
    for i, n in enumerate(sorted(set(names))):
        w.writerow([i, n])
    return buf.getvalue()


def read_labels_csv(path: str) -> list[str]:
    """Class names of an ``id,name`` CSV in id order; ids must be 0..n-1."""
    if not os.path.isfile(path):
        raise KineticsError(f"labels CSV {path!r} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows or "id" not in rows[0] or "name" not in rows[0]:
        raise KineticsError(f"labels CSV {path!r}: expected an 'id,name' header and at least one row")
    ids = [int(r["id"]) for r in rows]
    if ids != list(range(len(rows))):
        raise KineticsError(f"labels CSV {path!r}: ids are not 0..{len(rows) - 1} in order")
    return [r["name"] for r in rows]


def format_list_line(rel_path: str, label: int) -> str:
    """One list line, ``<relative path> <label>`` (no newline)."""
    if not _listable(rel_path):
        raise KineticsError(f"path {rel_path!r} cannot be written to a list (tab, newline or repeated spaces)")
    return f"{rel_path} {int(label)}"


def _rel(path: str, data_root: str) -> str:
    return os.path.relpath(path, data_root)


def dataset_list_lines(videos: Sequence[Video], labels: dict[str, int], data_root: str) -> list[str]:
    """List lines for ``videos`` with ``labels[class_name]``, paths relative to ``data_root``."""
    data_root = os.path.abspath(data_root)
    return [format_list_line(_rel(v.path, data_root), labels[v.class_name]) for v in videos]


def canonical_class_name(name: str, aliases: dict[str, str] | None = CLASS_ALIASES) -> str:
    """Name under which ``name`` joins the Kinetics-722 union (see :data:`CLASS_ALIASES`)."""
    return aliases.get(name, name) if aliases else name


def class_mapping(union_classes: Sequence[str], dataset_classes: Sequence[str],
                  aliases: dict[str, str] | None = CLASS_ALIASES) -> np.ndarray:
    """int64 K722 id of each class of a dataset, in the dataset's label order (sorted class names).

    ``head_722[mapping][label]`` is then the row of the dataset's class ``label``.
    """
    index = {n: i for i, n in enumerate(union_classes)}
    ordered = sorted(dataset_classes)
    missing = [c for c in ordered if canonical_class_name(c, aliases) not in index]
    if missing:
        raise KineticsError(f"classes {missing[:5]} are not in the K722 union")
    return np.array([index[canonical_class_name(c, aliases)] for c in ordered], dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------------
# Kinetics-722
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class K722Result:
    """Result of :func:`build_k722`.

    Attributes:
        classes: sorted union of the canonical class names; the K722 label is the index here.
        train, val: kept videos, each paired with its K722 label.
        mappings: ``{dataset name: int64 array}`` (see :func:`class_mapping`).
        report: counts and examples of what was dropped and why (JSON-serialisable).
    """

    classes: list[str]
    train: list[tuple[Video, int]]
    val: list[tuple[Video, int]]
    mappings: dict[str, np.ndarray]
    report: dict


def build_k722(scans: Sequence[DatasetScan], aliases: dict[str, str] | None = CLASS_ALIASES,
               max_examples: int = 20) -> K722Result:
    """Merge datasets into Kinetics-722.

    Rules, applied in the order the datasets are given (e.g. k400, k600, k700):

    1. Classes: sorted union of :func:`canonical_class_name` of every dataset's classes.
    2. Training videos whose YouTube id occurs in **any** given validation split are dropped (leaks), including
       the dataset's own validation split, which the original notebook announced but never filtered.
    3. The remaining training videos are de-duplicated by YouTube id: the first occurrence in dataset order (and
       within a dataset in sorted class/file order) is kept. A duplicate whose canonical class differs from the
       kept one is a *conflict*; it is dropped as well and counted separately, so every YouTube id trains exactly
       one label.
    4. Validation videos: the union of the validation splits, de-duplicated by YouTube id the same way.
    """
    if not scans:
        raise KineticsError("build_k722 needs at least one dataset")
    names = [s.name for s in scans]
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise KineticsError(f"dataset names must be unique, got {dup} more than once")
    classes = sorted({canonical_class_name(c, aliases) for s in scans for c in s.classes})
    label = {c: i for i, c in enumerate(classes)}
    applied = {s.name: {c: canonical_class_name(c, aliases) for c in s.classes
                        if canonical_class_name(c, aliases) != c} for s in scans}

    def k722_label(v: Video) -> int:
        return label[canonical_class_name(v.class_name, aliases)]

    # Which validation split(s) each YouTube id occurs in (first one in dataset order is reported).
    val_owner: dict[str, str] = {}
    for s in scans:
        for v in s.videos["val"]:
            val_owner.setdefault(v.youtube_id, s.name)

    def dedup(videos: Iterable[Video], drop_leaks: bool) -> tuple[list[tuple[Video, int]], dict]:
        kept: dict[str, tuple[Video, int]] = {}
        stats = {"input": Counter(), "kept": Counter(), "dropped_leaked": 0, "dropped_leaked_by_val": Counter(),
                 "dropped_duplicate_same_class": 0, "dropped_duplicate_same_class_within_dataset": 0,
                 "dropped_duplicate_conflict": 0, "leak_examples": [], "conflict_examples": []}
        for v in videos:
            stats["input"][v.dataset] += 1
            yid, lab = v.youtube_id, k722_label(v)
            if drop_leaks and yid in val_owner:
                stats["dropped_leaked"] += 1
                stats["dropped_leaked_by_val"][val_owner[yid]] += 1
                if len(stats["leak_examples"]) < max_examples:
                    stats["leak_examples"].append({"youtube_id": yid, "train": v.path, "val_of": val_owner[yid]})
                continue
            if yid in kept:
                first, first_lab = kept[yid]
                if first_lab == lab:
                    stats["dropped_duplicate_same_class"] += 1
                    if first.dataset == v.dataset:
                        stats["dropped_duplicate_same_class_within_dataset"] += 1
                else:
                    stats["dropped_duplicate_conflict"] += 1
                    if len(stats["conflict_examples"]) < max_examples:
                        stats["conflict_examples"].append({
                            "youtube_id": yid, "kept": first.path, "kept_class": classes[first_lab],
                            "dropped": v.path, "dropped_class": classes[lab]})
                continue
            kept[yid] = (v, lab)
            stats["kept"][v.dataset] += 1
        out = list(kept.values())
        stats["total_input"] = sum(stats["input"].values())
        stats["total_kept"] = len(out)
        for k in ("input", "kept", "dropped_leaked_by_val"):
            stats[k] = dict(stats[k])
        return out, stats

    train, train_stats = dedup((v for s in scans for v in s.videos["train"]), drop_leaks=True)
    val, val_stats = dedup((v for s in scans for v in s.videos["val"]), drop_leaks=False)
    for k in ("dropped_leaked", "dropped_leaked_by_val", "leak_examples"):
        del val_stats[k]
    mappings = {s.name: class_mapping(classes, s.classes, aliases) for s in scans}
    report = {
        "datasets": names,
        "num_classes": len(classes),
        "classes_per_dataset": {s.name: len(s.classes) for s in scans},
        "class_aliases_applied": applied,
        "mapping_ascending": {n: bool(np.all(np.diff(m) > 0)) for n, m in mappings.items()},
        "train": train_stats,
        "val": val_stats,
        "rules": ("train videos whose YouTube id is in any given val split are dropped; then train and val are each "
                  "de-duplicated by YouTube id keeping the first occurrence in dataset order "
                  f"({', '.join(names)}); duplicates with a different class (conflicts) are dropped too"),
    }
    return K722Result(classes, train, val, mappings, report)


# ----------------------------------------------------------------------------------------------------------------
# Writing outputs (with --dry-run)
# ----------------------------------------------------------------------------------------------------------------

class _Writer:
    """Writes text/npy files, or with ``dry_run`` only describes them; records what it wrote."""

    def __init__(self, out_dir: str, dry_run: bool, log: Callable[[str], None]):
        self.out_dir, self.dry_run, self.log = out_dir, dry_run, log
        self.written: list[str] = []

    def text(self, name: str, text: str, preview_lines: int = 3) -> str:
        path = os.path.join(self.out_dir, name)
        lines = text.splitlines()
        if self.dry_run:
            self.log(f"[dry-run] would write {path} ({len(lines)} lines)")
            for ln in lines[:preview_lines]:
                self.log(f"            {ln}")
        else:
            os.makedirs(self.out_dir, exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            os.replace(tmp, path)
            self.log(f"wrote {path} ({len(lines)} lines)")
        self.written.append(path)
        return path

    def npy(self, name: str, array: np.ndarray) -> str:
        path = os.path.join(self.out_dir, name)
        if self.dry_run:
            self.log(f"[dry-run] would write {path} ({array.dtype}, shape {tuple(array.shape)}, "
                     f"first {array[:5].tolist()})")
        else:
            os.makedirs(self.out_dir, exist_ok=True)
            np.save(path, array)
            self.log(f"wrote {path} ({array.dtype}, shape {tuple(array.shape)})")
        self.written.append(path)
        return path


def _lines_text(lines: Sequence[str]) -> str:
    return "".join(ln + "\n" for ln in lines)


def _check_data_root(scans: Sequence[DatasetScan], data_root: str, log: Callable[[str], None]) -> None:
    for s in scans:
        rel = os.path.relpath(s.root, data_root)
        if rel == ".." or rel.startswith(".." + os.sep):
            log(f"warning: dataset {s.name} root {s.root} is outside the data root {data_root}; list paths will "
                f"start with '..' (set DATA.ROOT to {data_root})")


def _scan_report(s: DatasetScan, max_examples: int = 50) -> dict:
    return {"root": s.root, "num_classes": len(s.classes),
            "videos": {k: len(v) for k, v in s.videos.items()},
            "skipped": len(s.skipped), "skipped_files": [{"path": p, "reason": r} for p, r in s.skipped],
            "ignored_entries": len(s.ignored), "ignored_examples": s.ignored[:max_examples]}


def _write_report(w: _Writer, stem: str, report: dict, markdown: str) -> None:
    w.text(stem + ".json", json.dumps(report, indent=2, sort_keys=False) + "\n", preview_lines=0)
    w.text(stem + ".md", markdown, preview_lines=0)


_KNOWN_SIZES = {"k400": 400, "k600": 600, "k700": 700}


def prepare_lists(scans: Sequence[DatasetScan], out_dir: str, data_root: str | None = None, *,
                  drop_leaked: bool = False, dry_run: bool = False,
                  log: Callable[[str], None] = print) -> dict:
    """Write ``<name>_train.txt``, ``<name>_val.txt``, ``<name>_labels.csv`` and ``<name>_report.{json,md}``.

    Args:
        scans: scanned datasets.
        out_dir: output directory.
        data_root: directory the list paths are relative to (``DATA.ROOT``); default ``out_dir``.
        drop_leaked: leave out training videos whose YouTube id is in the same dataset's val split (always
            counted in the report either way).
        dry_run: print what would be written instead of writing.

    Returns:
        ``{dataset name: report dict}``.
    """
    data_root = os.path.abspath(data_root or out_dir)
    _check_data_root(scans, data_root, log)
    w = _Writer(out_dir, dry_run, log)
    reports = {}
    for s in scans:
        labels = class_labels(s.classes)
        val_ids = {v.youtube_id for v in s.videos["val"]}
        leaked = [v for v in s.videos["train"] if v.youtube_id in val_ids]
        train = [v for v in s.videos["train"] if v.youtube_id not in val_ids] if drop_leaked else s.videos["train"]
        expected = _KNOWN_SIZES.get(s.name.lower())
        if expected and expected != len(s.classes):
            log(f"warning: {s.name} has {len(s.classes)} classes, the official release has {expected}")
        w.text(f"{s.name}_train.txt", _lines_text(dataset_list_lines(train, labels, data_root)))
        w.text(f"{s.name}_val.txt", _lines_text(dataset_list_lines(s.videos["val"], labels, data_root)))
        w.text(f"{s.name}_labels.csv", _labels_csv_text(s.classes))
        rep = _scan_report(s)
        rep.update({"data_root": data_root, "train_written": len(train), "val_written": len(s.videos["val"]),
                    "train_ids_in_own_val": len(leaked), "dropped_leaked": len(s.videos["train"]) - len(train),
                    "leaked_examples": [v.path for v in leaked[:20]]})
        md = [f"# {s.name} lists", "", f"- root: `{s.root}`", f"- data root: `{data_root}`",
              f"- classes: {len(s.classes)}",
              f"- train: {len(s.videos['train'])} found, {len(train)} written",
              f"- val: {len(s.videos['val'])} written",
              f"- training videos whose YouTube id is also in val: {len(leaked)} "
              f"({'dropped' if drop_leaked else 'kept; pass --drop-leaked to drop them'})",
              f"- unusable video files skipped: {len(s.skipped)}",
              f"- non-video entries ignored: {len(s.ignored)}", ""]
        if s.skipped:
            md += ["## Skipped files", ""] + [f"- `{p}`: {r}" for p, r in s.skipped] + [""]
        _write_report(w, f"{s.name}_report", rep, "\n".join(md))
        reports[s.name] = rep
        log(f"{s.name}: {len(s.classes)} classes, train {len(train)}, val {len(s.videos['val'])}, "
            f"skipped {len(s.skipped)}, train ids also in val {len(leaked)}"
            f"{' (dropped)' if drop_leaked else ''}")
    return reports


def prepare_k722(scans: Sequence[DatasetScan], out_dir: str, data_root: str | None = None, *, name: str = "k722",
                 aliases: dict[str, str] | None = CLASS_ALIASES, dry_run: bool = False,
                 log: Callable[[str], None] = print) -> K722Result:
    """Build Kinetics-722 (:func:`build_k722`) and write its lists, labels, class mappings and report."""
    data_root = os.path.abspath(data_root or out_dir)
    _check_data_root(scans, data_root, log)
    res = build_k722(scans, aliases)
    if {s.name.lower() for s in scans} == {"k400", "k600", "k700"} and len(res.classes) != 722:
        log(f"warning: the union has {len(res.classes)} classes, the released Kinetics-722 head has 722; class "
            f"folder names differ from the official ones (underscores? try --underscore-to-space)")
    underscored = sorted({c for s in scans for c in s.classes if "_" in c and " " not in c})
    if underscored:
        log(f"warning: {len(underscored)} class names contain '_' but no space (e.g. {underscored[0]!r}); the "
            f"official names use spaces, so labels and mappings would not match released heads "
            f"(try --underscore-to-space)")
    w = _Writer(out_dir, dry_run, log)
    w.text(f"{name}_train.txt", _lines_text([format_list_line(_rel(v.path, data_root), lab) for v, lab in res.train]))
    w.text(f"{name}_val.txt", _lines_text([format_list_line(_rel(v.path, data_root), lab) for v, lab in res.val]))
    w.text(f"{name}_labels.csv", _labels_csv_text(res.classes))
    for ds, m in res.mappings.items():
        w.npy(f"{name}_to_{ds}_mapping.npy", m)
    rep = dict(res.report)
    rep["data_root"] = data_root
    rep["inputs"] = {s.name: _scan_report(s) for s in scans}
    tr, va = rep["train"], rep["val"]
    md = [f"# {name}: merge of {', '.join(rep['datasets'])}", "", f"- classes: {rep['num_classes']} "
          f"(per dataset: {rep['classes_per_dataset']})",
          f"- class renames merged: {sum(len(a) for a in rep['class_aliases_applied'].values())} "
          f"{ {k: v for k, v in rep['class_aliases_applied'].items() if v} }", "",
          "## Training videos", "",
          f"- input: {tr['total_input']} {tr['input']}",
          f"- dropped, YouTube id in a validation split (leak): {tr['dropped_leaked']} "
          f"(by the first val split containing it: {tr['dropped_leaked_by_val']})",
          f"- dropped, duplicate YouTube id with the same class: {tr['dropped_duplicate_same_class']} "
          f"(within one dataset: {tr['dropped_duplicate_same_class_within_dataset']})",
          f"- dropped, duplicate YouTube id with a different class (conflict): {tr['dropped_duplicate_conflict']}",
          f"- kept: {tr['total_kept']} {tr['kept']}", "",
          "## Validation videos", "",
          f"- input: {va['total_input']} {va['input']}",
          f"- dropped, duplicate YouTube id with the same class: {va['dropped_duplicate_same_class']}",
          f"- dropped, duplicate YouTube id with a different class (conflict): {va['dropped_duplicate_conflict']}",
          f"- kept: {va['total_kept']} {va['kept']}", "",
          f"Rules: {rep['rules']}.", ""]
    if tr["conflict_examples"] or va["conflict_examples"]:
        md += ["## Conflict examples", ""]
        for ex in tr["conflict_examples"] + va["conflict_examples"]:
            md.append(f"- {ex['youtube_id']}: kept `{ex['kept_class']}` ({ex['kept']}), dropped "
                      f"`{ex['dropped_class']}` ({ex['dropped']})")
        md.append("")
    _write_report(w, f"{name}_report", rep, "\n".join(md))
    res.report = rep
    log(f"{name}: {len(res.classes)} classes; train kept {tr['total_kept']} of {tr['total_input']} "
        f"(leaked {tr['dropped_leaked']}, duplicates {tr['dropped_duplicate_same_class']}, "
        f"conflicts {tr['dropped_duplicate_conflict']}); val kept {va['total_kept']} of {va['total_input']}")
    return res


# ----------------------------------------------------------------------------------------------------------------
# Re-encoding to short-GOP H.264
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EncodeSettings:
    """H.264 encoding parameters.

    Attributes:
        short_side: output short side in pixels; the long side keeps the aspect ratio, both rounded to even.
        gop: a keyframe every ``gop`` frames exactly (scene-cut keyframes off), closed GOPs, no B-frames, so any
            frame decodes from the preceding keyframe in at most ``gop - 1`` extra frames.
        crf: x264 constant rate factor (quality; lower is better and larger).
        preset: x264 speed preset.
        threads: x264 threads per worker process.
        no_upscale: keep videos whose short side is already <= ``short_side`` at their size (only made even).
    """

    short_side: int = 320
    gop: int = 16
    crf: int = 23
    preset: str = "veryfast"
    threads: int = 1
    no_upscale: bool = False


def check_h264_encoder() -> None:
    """Raise :class:`KineticsError` if PyAV's FFmpeg has no libx264 encoder."""
    try:
        import av
        from av.codec import Codec
    except ImportError as e:
        raise KineticsError(f"re-encoding needs PyAV (the 'av' package): {e}") from e
    try:
        Codec("libx264", "w")
    except Exception as e:
        raise KineticsError(f"PyAV {av.__version__}'s FFmpeg has no libx264 encoder ({e}); install a PyAV build "
                            f"with libx264 (the standard PyAV wheels include it)") from e


def _output_size(width: int, height: int, s: EncodeSettings) -> tuple[int, int]:
    short = min(width, height)
    target = short if (s.no_upscale and short <= s.short_side) else s.short_side
    scale = target / short

    def even(x: float) -> int:
        return max(2, int(round(x / 2.0)) * 2)

    return even(width * scale), even(height * scale)


def count_frames(path: str) -> int:
    """Frames a full decode of ``path``'s first video stream yields (PyAV)."""
    import av

    with av.open(path) as c:
        return sum(1 for _ in c.decode(video=0))


def probe_output(path: str) -> dict:
    """Codec, size, frame count, keyframe positions and B-frame presence of an encoded file (demux + decode).

    ``keyframes`` are indices in decode order of the packets flagged as keyframes; ``reordered`` is True when
    presentation order differs from decode order or decoding is delayed (dts != pts), i.e. the stream has or allows
    B-frames; ``x264`` holds the encoder settings libx264 embeds in the stream (``{}`` for other encoders).
    """
    import av

    with av.open(path) as c:
        st = c.streams.video[0]
        info = {"codec": st.codec_context.name, "width": st.codec_context.width, "height": st.codec_context.height,
                "pix_fmt": st.codec_context.pix_fmt, "fps": float(st.average_rate) if st.average_rate else None}
        keyframes, pts, delayed, x264 = [], [], False, {}
        for p in c.demux(st):
            if p.size == 0:  # flush packet
                continue
            if not pts:
                # libx264 writes its settings into the first access unit ("x264 - core N ... options: a=1 b=2").
                m = re.search(rb"x264 - core .*? options: ([^\x00]*)", bytes(p))
                if m:
                    x264 = dict(kv.split("=", 1) for kv in m.group(1).decode("ascii", "replace").split()
                                if "=" in kv)
            if p.is_keyframe:
                keyframes.append(len(pts))
            delayed |= p.dts is not None and p.dts != p.pts
            pts.append(p.pts)
    info["packets"] = len(pts)
    info["keyframes"] = keyframes
    info["reordered"] = pts != sorted(pts) or delayed
    info["x264"] = x264
    info["frames"] = count_frames(path)
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    # +faststart moves the moov atom (the index) in front of the media data.
    moov, mdat = head.find(b"moov"), head.find(b"mdat")
    info["faststart"] = moov != -1 and (mdat == -1 or moov < mdat)
    return info


def reencode_video(src: str, dst: str, settings: EncodeSettings = EncodeSettings()) -> dict:
    """Re-encode ``src`` to H.264 at ``dst`` (MP4), then verify the output's frame count.

    Every decoded frame becomes one output frame at a constant rate (the source's average rate), so frame ``i`` of
    the output is frame ``i`` of the source: frame-index sampling and precomputed frame counts stay valid. A
    variable-rate source is re-timed, not resampled. Audio and metadata are dropped. The output is written to
    ``dst + '.part'`` and renamed to ``dst`` only after verification, so an interrupted run never leaves a partial
    file under the final name. ``src`` is only read.

    Returns:
        ``{"src", "dst", "frames", "width", "height", "fps", "src_header_frames", "warnings": [...]}``.

    Raises:
        KineticsError: the source cannot be decoded, has no frames, or the output does not verify.
    """
    import av

    tmp = dst + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    warnings: list[str] = []
    try:
        try:
            inp = av.open(src)
        except Exception as e:
            raise KineticsError(f"{src}: cannot open: {type(e).__name__}: {e}") from e
        with inp:
            if not inp.streams.video:
                raise KineticsError(f"{src}: no video stream")
            vs = inp.streams.video[0]
            # Parallelism comes from the worker processes; per-file threads only when asked for.
            vs.thread_type = "AUTO"
            vs.codec_context.thread_count = settings.threads
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            if not rate or rate <= 0:
                rate = Fraction(25)
                warnings.append("source frame rate unknown; encoded at 25 fps")
            # Keep CFR timestamps exact: a rational rate such as 30000/1001 is used as is.
            rate = Fraction(rate).limit_denominator(1001)
            header_frames = int(vs.frames or 0)
            n = 0
            out = None
            try:
                for frame in inp.decode(vs):
                    if out is None:
                        w, h = _output_size(frame.width, frame.height, settings)
                        out = av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"})
                        ost = out.add_stream("libx264", rate=rate)
                        ost.width, ost.height, ost.pix_fmt = w, h, "yuv420p"
                        ost.time_base = 1 / rate
                        cc = ost.codec_context
                        cc.gop_size = settings.gop
                        cc.max_b_frames = 0
                        # keyint = min-keyint and no scene-cut keyframes: keyframes exactly every gop frames;
                        # open-gop=0: every GOP is closed, decodable from its own keyframe.
                        cc.options = {"preset": settings.preset, "crf": str(settings.crf),
                                      "threads": str(settings.threads),
                                      "x264-params": f"keyint={settings.gop}:min-keyint={settings.gop}:scenecut=0:"
                                                     f"bframes=0:open-gop=0"}
                    img = frame.reformat(width=w, height=h, format="yuv420p", interpolation="BICUBIC")
                    img.pts = n
                    img.time_base = 1 / rate
                    # The decoder tags the source's own I-frames and libx264 honours such tags as forced
                    # keyframes, which would break the fixed GOP; let the encoder choose.
                    img.pict_type = av.video.frame.PictureType.NONE
                    for packet in ost.encode(img):
                        out.mux(packet)
                    n += 1
                if out is not None:
                    for packet in ost.encode():
                        out.mux(packet)
            except KineticsError:
                raise
            except Exception as e:
                raise KineticsError(f"{src}: decode/encode failed after {n} frames: {type(e).__name__}: {e}") from e
            finally:
                if out is not None:
                    out.close()
        if n == 0:
            raise KineticsError(f"{src}: no decodable video frames")
        if header_frames and header_frames != n:
            warnings.append(f"container header says {header_frames} frames, decoded {n}")
        try:
            got = count_frames(tmp)
        except Exception as e:
            raise KineticsError(f"{src}: output {tmp} does not decode: {e}") from e
        if got != n:
            raise KineticsError(f"{src}: output has {got} frames, source decoded to {n}")
        os.replace(tmp, dst)
        return {"src": src, "dst": dst, "frames": n, "width": w, "height": h, "fps": float(rate),
                "src_header_frames": header_frames, "warnings": warnings}
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def plan_reencode(src_root: str, dst_root: str) -> list[tuple[str, str]]:
    """``(src, dst)`` pairs for every video under ``src_root`` (recursive, sorted); ``dst`` mirrors the relative
    path under ``dst_root`` with the extension changed to ``.mp4``.

    Raises:
        KineticsError: missing source root, or roots that are equal or nested (outputs would mix with inputs).
    """
    src_root, dst_root = os.path.abspath(src_root), os.path.abspath(dst_root)
    if not os.path.isdir(src_root):
        raise KineticsError(f"source root {src_root!r} does not exist or is not a directory")
    if os.path.realpath(src_root) == os.path.realpath(dst_root):
        raise KineticsError(f"--dst must differ from --src ({src_root!r}); originals are never overwritten")
    for a, b in ((src_root, dst_root), (dst_root, src_root)):
        if os.path.realpath(b).startswith(os.path.realpath(a) + os.sep):
            raise KineticsError(f"{b!r} is inside {a!r}; use separate source and destination roots")
    pairs: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(src_root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not is_video_file(f):
                continue
            src = os.path.join(dirpath, f)
            rel = os.path.relpath(src, src_root)
            dst = os.path.join(dst_root, os.path.splitext(rel)[0] + ".mp4")
            if dst in seen:
                raise KineticsError(f"{seen[dst]!r} and {src!r} would both be written to {dst!r}")
            seen[dst] = src
            pairs.append((src, dst))
    return pairs


def _reencode_job(args: tuple[str, str, EncodeSettings]) -> dict:
    src, dst, settings = args
    t0 = time.perf_counter()
    try:
        r = reencode_video(src, dst, settings)
        r["ok"] = True
    except KineticsError as e:
        r = {"src": src, "dst": dst, "ok": False, "error": str(e)}
    except Exception as e:  # keep the pool alive whatever one file does; the report names it
        r = {"src": src, "dst": dst, "ok": False, "error": f"{src}: {type(e).__name__}: {e}"}
    r["seconds"] = round(time.perf_counter() - t0, 3)
    return r


def reencode_tree(src_root: str, dst_root: str | None = None, settings: EncodeSettings = EncodeSettings(), *,
                  workers: int = 1, dry_run: bool = False, progress: bool = True, report_dir: str | None = None,
                  log: Callable[[str], None] = print) -> dict:
    """Re-encode every video under ``src_root`` into ``dst_root`` (default: ``<src_root>_h264`` beside it).

    Resumable: a file whose output already exists is skipped (outputs only appear under their final name after
    verification). Failures are collected, not raised; the report is written to ``report_dir`` (default
    ``dst_root``) as ``reencode_report.json`` and ``.md``.

    Returns:
        ``{"src_root", "dst_root", "settings", "total", "skipped_existing", "done", "failed": [...],
        "warnings": [...], "frames", "seconds"}``.
    """
    dst_root = os.path.abspath(dst_root or os.path.abspath(src_root).rstrip(os.sep) + "_h264")
    pairs = plan_reencode(src_root, dst_root)
    todo = [(s, d) for s, d in pairs if not os.path.exists(d)]
    report = {"src_root": os.path.abspath(src_root), "dst_root": dst_root, "settings": asdict(settings),
              "total": len(pairs), "skipped_existing": len(pairs) - len(todo), "done": 0, "failed": [],
              "warnings": [], "frames": 0, "seconds": 0.0}
    if dry_run:
        log(f"[dry-run] would re-encode {len(todo)} of {len(pairs)} videos from {report['src_root']} into "
            f"{dst_root} (H.264, short side {settings.short_side}, GOP {settings.gop}, no B-frames); "
            f"{report['skipped_existing']} already done")
        for s, d in todo[:5]:
            log(f"            {s} -> {d}")
        return report
    check_h264_encoder()
    t0 = time.perf_counter()
    results = _map(_reencode_job, [(s, d, settings) for s, d in todo], workers, "re-encode", progress)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    for r in results:
        if r["ok"]:
            report["done"] += 1
            report["frames"] += r["frames"]
            for wmsg in r.get("warnings", []):
                report["warnings"].append({"src": r["src"], "warning": wmsg})
        else:
            report["failed"].append({"src": r["src"], "error": r["error"]})
    rdir = report_dir or dst_root
    os.makedirs(rdir, exist_ok=True)
    with open(os.path.join(rdir, "reencode_report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    md = [f"# Re-encode {report['src_root']} -> {dst_root}", "",
          f"- settings: {report['settings']}", f"- videos: {report['total']}, already done (skipped): "
          f"{report['skipped_existing']}, encoded now: {report['done']}, failed: {len(report['failed'])}",
          f"- frames encoded: {report['frames']} in {report['seconds']} s", ""]
    if report["failed"]:
        md += ["## Failures (originals untouched, no output written)", ""]
        md += [f"- `{x['src']}`: {x['error']}" for x in report["failed"]] + [""]
    if report["warnings"]:
        md += ["## Warnings", ""] + [f"- `{x['src']}`: {x['warning']}" for x in report["warnings"]] + [""]
    with open(os.path.join(rdir, "reencode_report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    log(f"re-encoded {report['done']} videos ({report['frames']} frames) in {report['seconds']} s; "
        f"skipped {report['skipped_existing']} already done; {len(report['failed'])} failed"
        + (f" (see {os.path.join(rdir, 'reencode_report.md')})" if report["failed"] else ""))
    return report
