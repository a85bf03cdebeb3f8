"""The flat layout of the official Kinetics downloads: one folder of videos per split,
``<root>/<split>/<youtube_id>_<start:06d>_<end:06d>.<ext>``, the classes in annotation CSVs
(``<root>/annotations/{train,val}.csv``, header ``label,youtube_id,time_start,time_end,split``; Kinetics-400's
with a trailing ``is_cc``).

A video's class is the label of the CSV row whose ``<youtube_id>_<time_start:06d>_<time_end:06d>`` is the file's
name without its extension (a file named ``<youtube_id>.<ext>``, by the id alone, takes the one row of that id; of
an id that several rows name, none; a CSV without time columns names its videos by id alone, and a file
``<youtube_id>_<start>_<end>.<ext>``, any times, is then that id's row's too), and its split is the split of the
CSV that lists it, whichever split folder it lies in: a video of val.csv saved in train/ is a validation video
(trusting the folder would train on it, and the leak removal could not tell). The ``split`` column is not read:
the CSV given for a split is that split's.

The scan gives the ``Video`` records (class name, split, path) that a class-folder tree of the same files gives,
in the same order (label as written, then file name, as the tree's folder name, then file name), so
de-duplication, leak removal, ``--check``, the labels and the Kinetics-722 merge do not tell the layouts apart.
CSV rows without a video file (the videos every Kinetics download lacks) are skipped as ``missing``, video files
that no row names as ``not in annotations``; both are counted per split and named in the report. A video both CSVs
list (in no release) is listed in the split whose folder holds it; the other split's row is skipped as ``listed in
the other split``, counted apart from the missing ones and named in a warning and the report.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from evautil.errors import not_utf8_line
from evautil.progress import ProgressLines, counted, stderr_line

from .common import KineticsError, other_separator, walk_progress
from .reencode_report import REPORT_JSON
from .video_files import (SKIP_MISSING, SKIP_OTHER_SPLIT, SKIP_UNANNOTATED, Video, broken_link, in_other_case,
                          refuse_missing_split, video_entries, video_skip)
from .video_names import is_video_file, unfinished_download, unicode_form, youtube_id

__all__ = ["ANNOTATION_COLUMNS", "ANNOTATIONS_DIR", "VAL_CSV_ALIAS", "AnnotationRow", "annotation_key",
           "read_annotations", "split_csvs", "val_csv_absent", "default_annotation_files", "is_flat_layout",
           "annotation_files", "scan_annotated"]

# The columns a row needs; others (split, is_cc) may follow in any order. A CSV without both time columns names
# its videos by YouTube id alone (:data:`ID_COLUMNS`).
ANNOTATION_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
ID_COLUMNS = ANNOTATION_COLUMNS[:2]
TIME_COLUMNS = ANNOTATION_COLUMNS[2:]
# Where the official downloads keep the CSVs: <root>/annotations/train.csv, val.csv (and test.csv, not read).
ANNOTATIONS_DIR = "annotations"
SPLITS = ("train", "val")
# Kinetics-700-2020's download names its val CSV validate.csv: read when a folder has no val.csv.
VAL_CSV_ALIAS = "validate.csv"
# A CSV larger than this is announced before it is read (a 650,000-row one, some 30 MB, takes seconds before the
# scan's first line; a longer read says how far it got, as a walk does).
ANNOUNCE_CSV_BYTES = 1 << 20


@dataclass(frozen=True)
class AnnotationRow:
    """One video of an annotation CSV: its label as written, the line it is on (for messages) and its YouTube
    id."""

    label: str
    line: int
    youtube_id: str = ""


def annotation_key(youtube_id: str, time_start: int, time_end: int) -> str:
    """File name, without extension, of an annotated video: ``<youtube_id>_<start:06d>_<end:06d>``."""
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


# A time as the releases write it: float() also took '1_0' and '1e1' for 10, and 'nan', 'inf' or other scripts'
# digits, which named a video no file is.
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def _seconds(text: str, where: str, column: str) -> int:
    """A time value of a CSV row: whole seconds from the video's start, written ``10`` or ``10.0``."""
    value = float(text) if _DECIMAL.fullmatch(text.strip()) else math.nan
    if not math.isfinite(value) or value != int(value):
        raise KineticsError(f"{where}: {column} {text!r} is not a whole number of seconds written in digits, as 10 "
                            f"or 10.0 (a video's file name is <youtube_id>_<time_start:06d>_<time_end:06d>)")
    if value < 0:  # "-1 is not a whole number" sent the user looking for a fraction
        raise KineticsError(f"{where}: {column} {text!r} is negative: a clip's times are seconds from the start of "
                            f"its YouTube video, 0 or more; fix the row or remove it")
    return int(value)


def _clip_times(fields: list[str], col: Mapping[str, int], where: str) -> tuple[int, int]:
    """``(time_start, time_end)`` of a CSV row, the clip's end after its start: a row whose times are reversed (time
    columns named the other way round in the header, or swapped in the row) named a video no file is."""
    start = _seconds(fields[col["time_start"]], where, "time_start")
    end = _seconds(fields[col["time_end"]], where, "time_end")
    if end <= start:
        raise KineticsError(f"{where}: time_end {fields[col['time_end']].strip()!r} is not after time_start "
                            f"{fields[col['time_start']].strip()!r}: fix the row, or the header if it names the time "
                            f"columns the other way round")
    return start, end


def read_annotations(path: str, progress: str | None = None) -> dict[str, AnnotationRow]:
    """``{annotation_key: row}`` of a Kinetics annotation CSV: UTF-8 (a BOM allowed), a header naming at least
    :data:`ANNOTATION_COLUMNS` in any order, labels as written but for the spaces around them (a label holding a
    comma is quoted, as csv does; the header repeated on a later line, as CSVs joined into one have it, is no row). A
    CSV with neither time column (only :data:`ID_COLUMNS`) keys its rows by the
    YouTube id alone, which one line on stderr says: a video named by its id, or by its id and any times, is then
    its id's row (``scan_annotated``). ``progress`` (a line's start, e.g. ``scan k700``): a CSV over
    :data:`ANNOUNCE_CSV_BYTES` is announced on stderr, and a long read says how far it got (None: silent).

    Raises:
        KineticsError: naming the file and line: a missing file or column, a line that is not UTF-8, a quote left
            open (a row running over several lines), a row with another number of fields than the header, an empty
            label or YouTube id, a time that is not whole seconds, or one video listed twice with two labels (twice
            with the same label is one video).
    """
    if not os.path.isfile(path):
        raise KineticsError(f"annotation CSV {path!r} {broken_link(path, 'file') or 'does not exist'}")
    rows: dict[str, AnnotationRow] = {}
    desc = f"{progress}: reading annotation CSV {path}"
    if progress is not None and os.path.getsize(path) > ANNOUNCE_CSV_BYTES:
        stderr_line(f"{desc} ({os.path.getsize(path) / 1e6:.0f} MB)")
    read = walk_progress(desc, "row", lines=progress is not None)
    start = 1  # the line the row being read begins on: csv's line_num is the line it ends on
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            timed = _timed_header(path, header)
            col = {c: header.index(c) for c in (ANNOTATION_COLUMNS if timed else ID_COLUMNS)}
            start = reader.line_num + 1
            for fields in reader:
                line, start = start, reader.line_num + 1
                if not any(x.strip() for x in fields):
                    continue
                # the header again: CSVs joined into one (`cat part1.csv part2.csv`, each with its BOM) made it a
                # row whose time_start 'time_start' was not a number
                if [x.strip().lstrip("\ufeff") for x in fields] == header:
                    continue
                where = f"annotation CSV {path!r}, line {line}"
                if reader.line_num > line:  # no label holds a line break: a quote left open swallowed the lines
                    raise KineticsError(f"{where}: a quote opened on this line is closed only on line "
                                        f"{reader.line_num}, or never")
                if len(fields) != len(header):
                    raise KineticsError(f"{where}: {len(fields)} fields, the header has {len(header)} (a label "
                                        f"holding a comma must be quoted)")
                # stripped as the header is: a CSV written "id, label, ..." made " abseiling" a class of its own
                label, yid = fields[col["label"]].strip(), fields[col["youtube_id"]].strip()
                if not label or not yid:
                    raise KineticsError(f"{where}: empty {'label' if not label else 'youtube_id'}")
                key = annotation_key(yid, *_clip_times(fields, col, where)) if timed else yid
                before = rows.setdefault(key, AnnotationRow(label, line, yid))
                read.update()
                if before.label != label:
                    untimed = "" if timed else " (without time columns, the clips of one YouTube video are one)"
                    raise KineticsError(f"{where}: video {key} has label {label!r}, and {before.label!r} on line "
                                        f"{before.line}{untimed}")
    except UnicodeDecodeError as e:
        raise KineticsError(f"annotation CSV {path!r}, {not_utf8_line(path, e)}") from e
    except csv.Error as e:  # e.g. a quote left open, whose field swallows the file up to csv's size limit
        raise KineticsError(f"annotation CSV {path!r}, line {start}: {e}") from e
    read.finish()
    return rows


def _timed_header(path: str, header: list[str]) -> bool:
    """Whether the ``header`` of the CSV at ``path`` names both time columns (False: neither, said on stderr).

    Raises:
        KineticsError: a column of :data:`ID_COLUMNS`, or one time column without the other, is missing.
    """
    absent = [c for c in ANNOTATION_COLUMNS if c not in header]
    if absent == list(TIME_COLUMNS):
        stderr_line(f"note: annotation CSV {path!r} has neither {' nor '.join(TIME_COLUMNS)}: its rows name videos "
                    f"by YouTube id alone (a file <youtube_id>.<ext>, or <youtube_id>_<start>_<end>.<ext>, is its "
                    f"id's row)")
        return False
    if absent:
        raise KineticsError(f"annotation CSV {path!r}, line 1: no column {', '.join(absent)} in the header "
                            f"{','.join(header)!r} (expected {','.join(ANNOTATION_COLUMNS)},split, or without both "
                            f"time columns to match videos by YouTube id alone){other_separator(header)}")
    return True


def split_csvs(folder: str, name: str, splits: tuple[str, ...] = SPLITS) -> dict[str, str]:
    """Each split's CSV in a folder of annotations: ``{split: <folder>/<split>.csv}``, for val
    ``<folder>/validate.csv`` (:data:`VAL_CSV_ALIAS`) when there is no val.csv but that, said in one line on stderr
    (dataset ``name``)."""
    files = {split: os.path.join(folder, f"{split}.csv") for split in splits}
    alias = os.path.join(folder, VAL_CSV_ALIAS)
    if "val" in files and not os.path.isfile(files["val"]) and os.path.isfile(alias):
        files["val"] = alias
        stderr_line(f"note: dataset {name}: no val.csv in {folder!r}: the val annotations are read from "
                    f"{VAL_CSV_ALIAS} (Kinetics-700-2020's name for it)")
    return files


def default_annotation_files(root: str, name: str, splits: tuple[str, ...] = SPLITS) -> dict[str, str]:
    """Where the official downloads keep each split's CSV: ``{split: <root>/annotations/<split>.csv}`` (val:
    see :func:`split_csvs`)."""
    return split_csvs(os.path.join(root, ANNOTATIONS_DIR), name, splits)


def val_csv_absent(folder: str) -> str:
    """What a folder without a val CSV lacks: both names the val split's CSV is looked for under."""
    return f"the annotation folder {folder!r} holds neither val.csv nor {VAL_CSV_ALIAS}"


def is_flat_layout(root: str, folders: Mapping[str, str]) -> bool:
    """True when every split folder ``<root>/<folders[split]>`` exists, none holds a subfolder (hidden ones aside)
    and some holds a video file: the official downloads' layout, not class folders."""
    has_video = False
    for folder in folders.values():
        path = os.path.join(root, folder)
        if not os.path.isdir(path):
            return False
        with os.scandir(path) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                if e.is_symlink() and not os.path.exists(e.path):  # gone, or a loop (is_dir raised ELOOP)
                    continue
                if e.is_dir():
                    return False
                has_video = has_video or is_video_file(e.name)
    return has_video


def _reencoded_from(root: str) -> str | None:
    """The annotation folder of the flat download that ``root`` is a re-encode of (the ``src_root`` its
    ``reencode_report.json`` names), when that folder exists: a re-encode writes videos only."""
    try:
        with open(os.path.join(root, REPORT_JSON), encoding="utf-8") as f:
            src = json.load(f).get("src_root")
    except (OSError, ValueError, AttributeError):  # none, or not a report: no hint
        return None
    found = os.path.join(src, ANNOTATIONS_DIR) if isinstance(src, str) else ""
    return found if found and os.path.isdir(found) else None


def annotation_files(name: str, root: str, folders: Mapping[str, str],
                     given: Mapping[str, str] | None) -> dict[str, str] | None:
    """Each split's annotation CSV (absolute), or None to read class folders.

    ``given`` (``{split: CSV}``, from ``--annotations``) means the annotated layout; a split it does not name has
    ``<root>/annotations/<split>.csv`` (for val, ``validate.csv`` when there is no ``val.csv``: see
    :func:`split_csvs`). Without it the layout is the annotated one when :func:`is_flat_layout`, with those default
    files.

    Raises:
        KineticsError: a split other than train or val, or a CSV that does not exist (the message says how to
            name it).
    """
    auto = given is None
    if auto:
        if not is_flat_layout(root, folders):
            return None
        given = {}
    other = sorted(set(given) - set(SPLITS))
    if other:
        raise KineticsError(f"dataset {name}: annotations for split(s) {other}; the splits are train and val")
    defaults = default_annotation_files(root, name, tuple(s for s in SPLITS if not given.get(s)))
    files = {split: os.path.abspath(given.get(split) or defaults[split]) for split in SPLITS}
    for split, path in files.items():
        if os.path.isfile(path):
            continue
        how = (f"name it with --annotations {name}:{split}=CSV, or the folder holding train.csv and val.csv with "
               f"--annotations {name}=DIR")
        gone = broken_link(path, "file") or "does not exist"
        if split == "val" and not given.get(split):  # the default val CSV was looked for under both names
            absent = default = val_csv_absent(os.path.dirname(path))
        else:
            absent = f"the {split} annotation CSV {path!r} {gone}"
            default = f"the default {path!r} {gone}"
        source = _reencoded_from(root) if auto else None
        if source:  # the documented next step after a re-encode: say the exact flag
            how = f"{root!r} is a re-encode of a download whose CSVs are named with --annotations {name}={source}"
        other = in_other_case(path, "file")
        if other is not None:  # Train.csv beside no train.csv (renamed, as --annotations NAME=DIR reads it too)
            how = f"{other!r} is there, its name in another case: rename it {os.path.basename(path)}"
        if auto:
            raise KineticsError(f"dataset {name}: the split folders in {root!r} hold video files and no class "
                                f"folders (the flat layout of the official downloads), but {absent}; {how}")
        if split in given:
            what = ("is a folder, not a CSV file (a folder holding train.csv and val.csv: --annotations "
                    f"{name}=DIR)" if os.path.isdir(path) else gone)
            raise KineticsError(f"dataset {name}: the {split} annotation CSV {path!r} {what}"
                                + (f"; {how}" if other is not None else ""))
        raise KineticsError(f"dataset {name}: no {split} annotation CSV given, and {default}; {how}")
    return files


def scan_annotated(name: str, root: str, folders: Mapping[str, str], csvs: Mapping[str, str],
                   underscore_to_space: bool, candidates: list[tuple[str, Video]], skipped: list[tuple[str, str]],
                   ignored: list[str], counts: Mapping[str, Counter], walk: ProgressLines | None = None,
                   progress_lines: bool = False
                   ) -> tuple[dict[str, list[str]], list[tuple[str, str]], dict, dict[str, str]]:
    """Scan the flat split folders ``<root>/<folders[split]>/<video>`` against the CSVs ``csvs[split]``.

    As ``scan._scan_split`` does for class folders: usable videos go to ``candidates`` (in label, then file name
    order), unusable ones and those no row names to ``skipped`` and ``counts`` (by split and kind), other entries,
    subfolders too, to ``ignored``; ``walk`` counts each video file; ``progress_lines``: reading a large CSV says
    so on stderr (:func:`read_annotations`).

    Returns:
        each split's sorted class names (of all its rows, with a video on disk or not), the annotated videos
        without a file as ``(<split folder>/<name without extension>, reason)`` (counted as missing in
        ``counts``, left for the caller to add to ``skipped``), the report's facts on the annotations, and where
        each class is first given (``line <n> of <CSV>``, train's CSV first), for messages on a class.
    """
    rows = {split: read_annotations(csvs[split], f"scan {name}" if progress_lines else None) for split in folders}
    for split, r in rows.items():
        if not r:
            raise KineticsError(f"dataset {name}: annotation CSV {csvs[split]!r} lists no video")
        _refuse_other_unicode_forms_in_csv(name, csvs[split], r, underscore_to_space)
    matched, annotated, elsewhere = _match_files(name, root, folders, csvs, rows, underscore_to_space, skipped,
                                                 ignored, counts, walk)
    matched.sort(key=lambda x: x[0])  # a class-folder tree's order: folder (the label as written), file name
    for _, v, f, folder in matched:
        skip = video_skip(f, os.path.join(folder, f.name))
        if walk is not None:
            walk.update()
        if skip is None:
            candidates.append((v.split, v))
        else:
            skipped.append((v.path, skip[0]))
            counts[v.split][skip[1]] += 1
    absent, lost, twice, twice_examples = _rows_without_file(name, root, folders, csvs, rows, underscore_to_space,
                                                             annotated, ignored, counts)
    info = {"csv": dict(csvs), "rows": {s: len(rows[s]) for s in folders}, "rows_without_video": lost,
            "rows_of_videos_in_other_split": twice, "rows_of_videos_in_other_split_examples": twice_examples[:20],
            "videos_in_other_split_folder": len(elsewhere), "videos_in_other_split_folder_examples": elsewhere[:20]}
    classes = {split: sorted({_class_name(row.label, underscore_to_space) for row in rows[split].values()})
               for split in folders}
    where: dict[str, str] = {}
    for split in folders:
        for row in sorted(rows[split].values(), key=lambda r: r.line):
            where.setdefault(_class_name(row.label, underscore_to_space), f"line {row.line} of {csvs[split]}")
    return classes, absent, info, where


def _refuse_other_unicode_forms_in_csv(name: str, path: str, rows: Mapping[str, AnnotationRow],
                                       underscore_to_space: bool) -> None:
    """Two labels of one CSV that differ only in their Unicode form (rows pasted from a file written on macOS, in
    NFD) were two classes that look alike, each with part of the videos, as two such class folders were."""
    first: dict[str, tuple[str, int]] = {}  # {NFC of a class name: (class name, line it is first given on)}
    for row in sorted(rows.values(), key=lambda r: r.line):
        cls = _class_name(row.label, underscore_to_space)
        other, line = first.setdefault(unicodedata.normalize("NFC", cls), (cls, row.line))
        if other != cls:
            raise KineticsError(f"dataset {name}: annotation CSV {path!r}: labels {other!r} ({unicode_form(other)}) "
                                f"on line {line} and {cls!r} ({unicode_form(cls)}) on line {row.line} differ only "
                                f"in their Unicode form, and would be two classes that look alike; write every row's "
                                f"label alike (in NFC, as most systems write names)")


def _class_name(label: str, underscore_to_space: bool) -> str:
    return label.replace("_", " ") if underscore_to_space else label


def _match_files(name: str, root: str, folders: Mapping[str, str], csvs: Mapping[str, str],
                 rows: Mapping[str, dict[str, AnnotationRow]], underscore_to_space: bool,
                 skipped: list[tuple[str, str]], ignored: list[str], counts: Mapping[str, Counter],
                 walk: ProgressLines | None) -> tuple[list, dict[tuple[str, str], str], list[str]]:
    """The video files of the split folders matched with their rows: ``[((label, file name, path), Video, entry,
    folder)]``, ``{(split of the row, row key): path}`` and the paths of the videos lying in the other split's
    folder; the files no row names go to ``skipped`` and ``counts`` (each counted by ``walk``), other entries to
    ``ignored``."""
    # the rows of each YouTube id: a file named by the id alone (``<youtube_id>.mp4``, as downloaders name a video
    # by default) is the video of the one row of that id; a file named otherwise (unpadded times) is told its name
    by_id: dict[str, list[str]] = {}
    for split in folders:
        for key, row in rows[split].items():
            same = by_id.setdefault(row.youtube_id, [])
            if key not in same:  # a video both CSVs list is one row here
                same.append(key)
    matched, annotated, elsewhere = [], {}, []
    for split, folder in folders.items():
        split_root = os.path.join(root, folder)
        refuse_missing_split(name, split_root, f"expected <root>/{folder}/<youtube_id>_<start>_<end>.<ext>, "
                             f"annotated in {csvs[split]!r}", split)
        for f in video_entries(split_root, ignored):
            key, path = os.path.splitext(f.name)[0], os.path.join(root, folder, f.name)
            same_id = by_id.get(key, []) if not any(key in rows[s] for s in folders) else []
            if len(same_id) == 1:  # named by its YouTube id alone: the video of that id's one row
                key = same_id[0]
            elif not same_id and _untimed_row(key, by_id):  # a CSV without times names it by its id alone
                key = _untimed_row(key, by_id)
            # The folder's own CSV first: a video in both CSVs (in no release) stays in the split it lies in.
            owner = next((s for s in (split, *folders) if key in rows[s]), None)
            if owner is None:
                reason = _unannotated(f.name, folders, same_id or by_id.get(youtube_id(f.name), []))
                skipped.append((path, reason))
                counts[split][SKIP_UNANNOTATED] += 1
                if walk is not None:
                    walk.update()
                continue
            row = rows[owner][key]
            annotated[owner, key] = path
            if owner != split:
                elsewhere.append(path)
            matched.append(((row.label, f.name, path),
                            Video(name, owner, _class_name(row.label, underscore_to_space), path), f, folder))
    return matched, annotated, elsewhere


def _unannotated(file_name: str, folders: Mapping[str, str], near: list[str]) -> str:
    """The reason a video file that no row names is skipped; ``near``: the rows of its YouTube id, to name."""
    name_it = "a video's file name is <youtube_id>_<time_start:06d>_<time_end:06d>.<ext>"
    hint = (f" (rows name {', '.join(near[:3])}{', ...' if len(near) > 3 else ''}, clips of the same "
            f"YouTube video: {name_it})" if len(near) > 1 else
            f" (a row names {near[0]}: {name_it})" if near else "")
    return (f"not in annotations: no row of the {' or '.join(folders)} CSV names "
            f"{os.path.splitext(file_name)[0]}{hint}")


def _rows_without_file(name: str, root: str, folders: Mapping[str, str], csvs: Mapping[str, str],
                       rows: Mapping[str, dict[str, AnnotationRow]], underscore_to_space: bool,
                       annotated: Mapping[tuple[str, str], str], ignored: list[str], counts: Mapping[str, Counter]
                       ) -> tuple[list[tuple[str, str]], dict[str, int], dict[str, int], list[str]]:
    """The rows whose video no file of their split is (``annotated``: the rows with one), counted in ``counts``:
    ``(path, reason)`` of each, and per split how many are missing and how many are of a video the other split's
    folder holds and its CSV lists too (said in one warning), with examples of the latter."""
    absent: list[tuple[str, str]] = []
    lost: dict[str, int] = {}
    twice: dict[str, int] = {}  # rows of a video both CSVs list, whose file the other split's row took
    twice_examples: list[str] = []
    # a download not finished (<key>.mp4.part, <key>.f137.mp4, or by <youtube_id> alone): the row's video is
    # missing, but not lost
    partial = {stem: p for p in ignored if (stem := unfinished_download(os.path.basename(p))) is not None}
    for split, folder in folders.items():
        lost[split] = twice[split] = 0
        for key, row in rows[split].items():
            if (split, key) in annotated:
                continue
            line = f"line {row.line} of {csvs[split]} (class {_class_name(row.label, underscore_to_space)!r})"
            other = next((s for s in folders if (s, key) in annotated), None)
            if other is None:
                part = partial.get(key) or partial.get(row.youtube_id)
                unfinished = f"; {part} is a download not finished: download the video again" if part else ""
                absent.append((os.path.join(root, folder, key), f"missing: no video file for {line}{unfinished}"))
                lost[split] += 1
                continue
            # the file is there, in the other split's folder, and listed there: not a video the download lacks
            found = annotated[other, key]
            absent.append((os.path.join(root, folder, key), f"{SKIP_OTHER_SPLIT}: {line} names {found}, which is "
                                                             f"in the {other} CSV too and lies in its folder: "
                                                             f"listed in {other} only"))
            twice[split] += 1
            twice_examples.append(f"{found} (line {row.line} of {csvs[split]})")
        counts[split][SKIP_MISSING] += lost[split]
        counts[split][SKIP_OTHER_SPLIT] += twice[split]
    if twice_examples:
        stderr_line(f"warning: dataset {name}: {counted(len(twice_examples), 'video')} in both the train and the val "
                    f"CSV: each is listed in the split whose folder holds it, the other split's row skipped as "
                    f"{SKIP_OTHER_SPLIT!r}, not missing (e.g. {'; '.join(twice_examples[:3])})")
    return absent, lost, twice, twice_examples


def _untimed_row(stem: str, by_id: Mapping[str, list[str]]) -> str | None:
    """The row key of a CSV without time columns (the YouTube id itself) that the file ``stem``,
    ``<youtube_id>_<start>_<end>``, is the video of; None when it is not named so or no such row names its id."""
    timed = re.fullmatch(r"(.+)_\d+_\d+", stem)
    yid = timed.group(1) if timed else None
    return yid if yid is not None and yid in by_id.get(yid, []) else None
