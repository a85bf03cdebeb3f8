"""An evaluation's files: ``predictions_<split>.csv`` (a row for every listed video) and ``per_class_<split>.csv``,
the per-class accuracy behind them and the eval line, and the list entries that name one video twice."""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Iterable, Sequence

from evautil.files import atomic_write_text, naming_the_file, plain_spelling

__all__ = ["write_predictions", "per_class_accuracy", "listed_more_than_once", "top5_is_informative"]


def top5_is_informative(num_classes: int) -> bool:
    """Whether top-5 accuracy says anything: with 5 classes or fewer every video's top 5 holds its label, so its
    top-5 would be 100 % whatever the model does (reported as null / blank instead)."""
    return num_classes > 5


def listed_more_than_once(predictions: Sequence[tuple], entries: dict[int, Any]) -> list[list[Any]]:
    """The evaluated list entries (``ListEntry`` by row) that name the same file as another evaluated one (their
    paths spelled plainly, :func:`evautil.files.plain_spelling`: ``link/../a.mp4`` is not ``a.mp4`` when ``link``
    is a symbolic link), grouped per file in row order: a list that repeats a line scores that video once per
    line."""
    groups: dict[str, list[Any]] = {}
    for row, *_ in predictions:
        if row in entries:
            groups.setdefault(plain_spelling(entries[row].path), []).append(entries[row])
    return [g for g in groups.values() if len(g) > 1]


def per_class_accuracy(predictions: Sequence[tuple], num_classes: int) -> list[dict[str, Any]]:
    """Top-1 / top-5 accuracy (percent) and video count of every class that occurs in ``predictions``; top-5 is
    None with 5 classes or fewer (:func:`top5_is_informative`)."""
    informative = top5_is_informative(num_classes)
    stats = [[0, 0, 0] for _ in range(num_classes)]
    for _, label, classes, _ in predictions:
        s = stats[label]
        s[0] += 1
        s[1] += int(classes[0] == label)
        s[2] += int(label in classes[:5])
    return [{"class": c, "num_videos": n, "top1": 100.0 * a1 / n, "top5": 100.0 * a5 / n if informative else None}
            for c, (n, a1, a5) in enumerate(stats) if n]


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO(newline="")
    csv.writer(out).writerows(rows)
    return out.getvalue()


def write_predictions(output_dir: str, split: str, predictions: Sequence[tuple], paths: dict[int, str],
                      num_classes: int, class_names: dict[int, str] | None = None,
                      unreadable: Sequence[tuple[int, int | None, str]] = ()) -> tuple[str, str]:
    """Write ``predictions_{split}.csv`` (path, label, top-5 classes with probabilities, ``status`` ``ok``) and
    ``per_class_{split}.csv``; class names from ``class_names`` when given. ``unreadable``: ``(index, label,
    reason)`` of the listed videos not scored, a row each with ``status`` ``error`` and the reason (as
    tools/predict.py writes them), among the others in list order. Returns both paths."""
    names = class_names or {}
    # Each file is written whole or not at all (a stop in the write leaves the earlier file, never half of one), and
    # synced with its rename: the eval line is logged (and a test's progress file removed) once they are written, so
    # a power loss then must not leave an empty or half file under the final name.
    ranks = min(5, num_classes)  # fewer than 5 classes: as many ranks as the rows hold
    header = ["index", "path", "label", "label_name", "correct_top1"]
    for r in range(1, ranks + 1):
        header += [f"top{r}_class", f"top{r}_name", f"top{r}_prob"]
    header += ["status", "error"]  # last: the columns before them stay where they were
    rows: list[tuple[int, list[Any]]] = []
    for index, label, classes, probs in predictions:
        row: list[Any] = [index, paths.get(index, ""), label, names.get(label, ""), int(classes[0] == label)]
        for c, p in zip(classes, probs):
            row += [c, names.get(c, ""), f"{p:.6f}"]
        rows.append((index, row + [""] * (3 * (ranks - len(classes))) + ["ok", ""]))
    for index, label, reason in unreadable:  # no score: counted in neither top-1 nor top-5 (nor num_videos)
        rows.append((index, [index, paths.get(index, ""), "" if label is None else label,
                             names.get(label, "") if label is not None else "", ""] + [""] * (3 * ranks)
                     + ["error", reason]))
    rows.sort(key=lambda r: r[0])
    pred_path = os.path.join(output_dir, f"predictions_{split}.csv")
    with naming_the_file(pred_path):  # a full disk's error from write() names no file
        atomic_write_text(pred_path, _csv_text([header] + [row for _, row in rows]))
    per_class = [["class", "name", "num_videos", "top1", "top5"]]
    for s in per_class_accuracy(predictions, num_classes):
        per_class.append([s["class"], names.get(s["class"], ""), s["num_videos"], f"{s['top1']:.2f}",
                          "" if s["top5"] is None else f"{s['top5']:.2f}"])
    cls_path = os.path.join(output_dir, f"per_class_{split}.csv")
    with naming_the_file(cls_path):
        atomic_write_text(cls_path, _csv_text(per_class))
    return pred_path, cls_path
