"""Labels and list files in the original format (``<path relative to DATA.ROOT> <label>``, one video a line).

Also the per-dataset cleaning rule of the original list notebook: each dataset's train and val lists are
de-duplicated by YouTube id (first occurrence kept), and training videos whose YouTube id is in that dataset's val
list are removed. The notebook removed them for K600 and K700 only (for K400 it printed a message and filtered
nothing, SPEC.md section 6); here it is done for every dataset by default, and both steps can be switched off.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from evautil.errors import not_utf8_line

from .common import KineticsError, other_separator
from .scan import DatasetScan, Video
from .video_files import broken_link
from .video_names import list_name, unlistable_reason

__all__ = ["class_labels", "write_labels_csv", "labels_csv_text", "read_labels_csv", "format_list_line",
           "relative_path", "climbs_out", "dataset_list_lines", "YoutubeIdFilter", "keep_first_by_youtube_id",
           "DatasetLists", "clean_dataset_lists", "classes_left_without_training"]


def class_labels(names: Iterable[str]) -> dict[str, int]:
    """``{name: index in sorted(set(names))}``: the label convention of every list this module writes."""
    return {n: i for i, n in enumerate(sorted(set(names)))}


def write_labels_csv(path: str, names: Sequence[str]) -> None:
    """Write ``id,name`` rows for ``sorted(names)`` (ids 0..n-1)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(labels_csv_text(names))


def labels_csv_text(names: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "name"])
    for i, n in enumerate(sorted(set(names))):
        w.writerow([i, n])
    return buf.getvalue()


def read_labels_csv(path: str) -> list[str]:
    """Class names of an ``id,name`` CSV in id order; ids must be 0..n-1.

    Raises:
        KineticsError: naming the file, and the line where one is at fault: a missing file or column, a line that
            is not UTF-8, an id that is not a whole number or not the next one, an empty name, a name cut by an
            unquoted comma. Spaces around a name or a header's column are not part of it.
    """
    if not os.path.isfile(path):
        raise KineticsError(f"labels CSV {path!r} {broken_link(path, 'file') or 'does not exist'}")
    rows: list[tuple[int, dict]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            # stripped as the training run's reader strips them: "id, name" and "0, abseiling" named " abseiling"
            reader.fieldnames = header = [h.strip() for h in reader.fieldnames or []]
            # "expected an 'id,name' header" named neither the column missing nor the header read (a file without
            # one, "0,abseiling", lost its first class to it)
            absent = [c for c in ("id", "name") if c not in header]
            if absent:
                raise KineticsError(f"labels CSV {path!r}, line 1: no column {', '.join(absent)} in the header "
                                    f"{','.join(header)!r} (expected id,name, then one row per class)"
                                    f"{other_separator(header)}")
            rows = [(reader.line_num, r) for r in reader]
    except UnicodeDecodeError as e:  # was a traceback, as were the row errors below
        raise KineticsError(f"labels CSV {path!r}, {not_utf8_line(path, e)}") from e
    except csv.Error as e:
        raise KineticsError(f"labels CSV {path!r}, line {reader.line_num}: {e}") from e
    if not rows:
        raise KineticsError(f"labels CSV {path!r}: no row below its header (expected id,name, then one row per "
                            f"class)")
    names: list[str] = []
    for line, r in rows:
        where = f"labels CSV {path!r}, line {line}"
        try:
            cls = int(r["id"])
        except (TypeError, ValueError):
            raise KineticsError(f"{where}: id {r['id']!r} is not a whole number (expected 'id,name')") from None
        if cls != len(names):
            raise KineticsError(f"{where}: id {cls}, expected {len(names)} (ids are 0..{len(rows) - 1} in order)")
        if any(x.strip() for x in r.get(None) or []):  # DictReader's fields past the header's
            raise KineticsError(f"{where}: {len(r) - 1 + len(r[None])} fields, the header has {len(r) - 1}: quote a "
                                f"name that holds a comma (csv cut {r['name']!r} there)")
        name = (r["name"] or "").strip()
        if not name:
            raise KineticsError(f"{where}: class {cls} has no name")
        names.append(name)
    return names


def format_list_line(rel_path: str, label: int) -> str:
    """One list line, ``<relative path> <label>`` (no newline); KineticsError when the list reader would not read
    ``rel_path`` back from it (:func:`~tools.kinetics.video_names.unlistable_reason`); a leading ``~`` written as
    ``./~``, which the reader reads under the root, not as the home folder."""
    why = unlistable_reason(rel_path)
    if why is not None:
        raise KineticsError(f"path {rel_path!r} cannot be written to a video list: {why}")
    return f"{list_name(rel_path)} {int(label)}"


def relative_path(path: str, data_root: str) -> str:
    """``path`` relative to ``data_root`` as a list line names it (and its index cache): ``./`` before a leading
    ``~`` (:func:`~tools.kinetics.video_names.list_name`). A path outside the root climbs from the folder the root
    really is (:func:`climbs_out`), as the system reads its ``..`` there."""
    rel = os.path.relpath(path, data_root)
    if climbs_out(rel):
        # "<root>/../x" is read from the root's link target: --out data, a link to another disk, listed a video
        # of /tmp/k400 as ../../tmp/k400/..., which leads under that disk, a missing file for every video
        rel = os.path.relpath(path, os.path.realpath(data_root))
    return list_name(rel)


def climbs_out(rel_path: str) -> bool:
    """Whether a relative path leads out of its root (starts with ``..``)."""
    return rel_path == os.pardir or rel_path.startswith(os.pardir + os.sep)


def dataset_list_lines(videos: Sequence[Video], labels: dict[str, int], data_root: str) -> list[str]:
    """List lines for ``videos`` with ``labels[class_name]``, paths relative to ``data_root``."""
    data_root = os.path.abspath(data_root)
    return [format_list_line(relative_path(v.path, data_root), labels[v.class_name]) for v in videos]


# ----------------------------------------------------------------------------------------------------------------
# De-duplication and leak removal by YouTube id
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class YoutubeIdFilter:
    """Result of :func:`keep_first_by_youtube_id`.

    Attributes:
        kept: the videos kept, in input order.
        leaked: videos dropped because their YouTube id is in the excluded set (a validation list).
        duplicates: ``(dropped, kept)`` pairs: a later video and the first occurrence of its YouTube id.
    """

    kept: list[Video] = field(default_factory=list)
    leaked: list[Video] = field(default_factory=list)
    duplicates: list[tuple[Video, Video]] = field(default_factory=list)


def keep_first_by_youtube_id(videos: Iterable[Video], exclude: Container[str] = frozenset(),
                             dedup: bool = True) -> YoutubeIdFilter:
    """Drop videos whose YouTube id is in ``exclude``, then (``dedup``) every repeat of an id already kept.

    The order of the two steps does not change the result: an excluded id is dropped in all its occurrences.
    """
    out = YoutubeIdFilter()
    first: dict[str, Video] = {}
    for v in videos:
        yid = v.youtube_id
        if yid in exclude:
            out.leaked.append(v)
        elif dedup and yid in first:
            out.duplicates.append((v, first[yid]))
        else:
            first.setdefault(yid, v)
            out.kept.append(v)
    return out


@dataclass
class DatasetLists:
    """One dataset's lists after :func:`clean_dataset_lists`, and the counts for its report."""

    train: list[Video]
    val: list[Video]
    report: dict


def _duplicate_counts(pairs: list[tuple[Video, Video]]) -> dict:
    other = [(d, k) for d, k in pairs if d.class_name != k.class_name]
    return {"dropped": len(pairs), "other_class": len(other),
            "examples": [{"youtube_id": d.youtube_id, "kept": k.path, "dropped": d.path} for d, k in pairs[:20]]}


def clean_dataset_lists(scan: DatasetScan, *, dedup: bool = True, drop_leaked: bool = True) -> DatasetLists:
    """The original notebook's per-dataset rule (module docstring), switchable step by step.

    Val is de-duplicated first (``dedup``); train then loses every video whose YouTube id is in the val list
    (``drop_leaked``) and every repeat of a YouTube id (``dedup``). "First" is the scan order: class folder, then
    file name. A duplicate in another class than its first occurrence is dropped too (and counted apart), as in
    the notebook, so each YouTube id carries one label.
    """
    val = keep_first_by_youtube_id(scan.videos["val"], dedup=dedup)
    val_ids = {v.youtube_id for v in val.kept}
    train = keep_first_by_youtube_id(scan.videos["train"], exclude=val_ids if drop_leaked else frozenset(),
                                     dedup=dedup)
    in_val = [v for v in scan.videos["train"] if v.youtube_id in val_ids]
    skipped = {split: dict(scan.skipped_counts.get(split, {})) for split in ("train", "val")}
    # "found" is every video file of the split, the skipped ones included, so that for each split
    # found = written + skipped + dropped_leaked (train) + duplicates dropped.
    report = {
        "dedup": dedup, "drop_leaked": drop_leaked,
        "train_found": scan.found_in("train"), "val_found": scan.found_in("val"),
        "train_written": len(train.kept), "val_written": len(val.kept),
        "train_skipped": sum(skipped["train"].values()), "val_skipped": sum(skipped["val"].values()),
        "train_skipped_by_kind": skipped["train"], "val_skipped_by_kind": skipped["val"],
        "train_ids_in_own_val": len(in_val), "dropped_leaked": len(train.leaked),
        "leaked_examples": [v.path for v in in_val[:20]],
        "train_duplicates": _duplicate_counts(train.duplicates),
        "val_duplicates": _duplicate_counts(val.duplicates),
    }
    return DatasetLists(train.kept, val.kept, report)


def classes_left_without_training(scan: DatasetScan, cleaned: DatasetLists) -> list[str]:
    """The classes of ``scan`` with training videos none of which is left in ``cleaned.train``: each one's videos
    were all repeats of a YouTube id another class kept (one file in two class folders) or ids of the val list."""
    kept = {v.class_name for v in cleaned.train}
    return sorted({v.class_name for v in scan.videos["train"]} - kept)
