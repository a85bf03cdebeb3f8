"""Labels and list files in the original format (``<path relative to DATA.ROOT> <label>``, one video a line)."""

from __future__ import annotations

import csv
import io
import os
from typing import Iterable, Sequence

from .common import KineticsError
from .scan import Video, is_listable

__all__ = ["class_labels", "write_labels_csv", "labels_csv_text", "read_labels_csv", "format_list_line",
           "relative_path", "dataset_list_lines"]


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
    if not is_listable(rel_path):
        raise KineticsError(f"path {rel_path!r} cannot be written to a list (tab, newline or repeated spaces)")
    return f"{rel_path} {int(label)}"


def relative_path(path: str, data_root: str) -> str:
    """``path`` relative to ``data_root`` (what a list line holds)."""
    return os.path.relpath(path, data_root)


def dataset_list_lines(videos: Sequence[Video], labels: dict[str, int], data_root: str) -> list[str]:
    """List lines for ``videos`` with ``labels[class_name]``, paths relative to ``data_root``."""
    data_root = os.path.abspath(data_root)
    return [format_list_line(relative_path(v.path, data_root), labels[v.class_name]) for v in videos]
