"""The merged Kinetics-722: class union (renamed classes merged), de-duplication, leak removal, class mappings."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .common import KineticsError
from .lists import keep_first_by_youtube_id
from .scan import DatasetScan, Video

__all__ = ["CLASS_ALIASES", "canonical_class_name", "class_mapping", "K722Result", "build_k722"]

# Classes that Kinetics renamed between releases. The released Kinetics-722 head (722 classes, not the 725 raw
# folder names of K400 + K600 + K700) merges each pair under the newer name, so the K722 union maps the old name
# onto the new one. Renaming keeps every dataset's alphabetical order, so the mappings stay ascending.
CLASS_ALIASES: dict[str, str] = {
    "changing wheel": "changing wheel (not on bike)",                         # K400 -> K600/K700
    "cooking sausages": "cooking sausages (not on barbeque)",                 # K400 -> K600/K700
    "passing american football (not in game)": "passing American football (not in game)",  # K600 -> K400/K700
}


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


def _merge_split(videos: list[Video], val_owner: dict[str, str] | None, label_of: Callable[[Video], int],
                 classes: Sequence[str], max_examples: int) -> tuple[list[tuple[Video, int]], dict]:
    """One split of the merge: leaks out (train only: ``val_owner`` maps a val YouTube id to its dataset), then
    repeats of a YouTube id out; the kept videos with their K722 labels and the counts for the report."""
    result = keep_first_by_youtube_id(videos, exclude=val_owner or frozenset())
    stats: dict = {"input": dict(Counter(v.dataset for v in videos)),
                   "kept": dict(Counter(v.dataset for v in result.kept))}
    if val_owner is not None:
        stats["dropped_leaked"] = len(result.leaked)
        stats["dropped_leaked_by_val"] = dict(Counter(val_owner[v.youtube_id] for v in result.leaked))
        stats["leak_examples"] = [{"youtube_id": v.youtube_id, "train": v.path, "val_of": val_owner[v.youtube_id]}
                                  for v in result.leaked[:max_examples]]
    same = [(d, k) for d, k in result.duplicates if label_of(d) == label_of(k)]
    conflicts = [(d, k) for d, k in result.duplicates if label_of(d) != label_of(k)]
    stats["dropped_duplicate_same_class"] = len(same)
    stats["dropped_duplicate_same_class_within_dataset"] = sum(d.dataset == k.dataset for d, k in same)
    stats["dropped_duplicate_conflict"] = len(conflicts)
    stats["conflict_examples"] = [{"youtube_id": d.youtube_id, "kept": k.path, "kept_class": classes[label_of(k)],
                                   "dropped": d.path, "dropped_class": classes[label_of(d)]}
                                  for d, k in conflicts[:max_examples]]
    stats["total_input"], stats["total_kept"] = len(videos), len(result.kept)
    return [(v, label_of(v)) for v in result.kept], stats


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

    train = _merge_split([v for s in scans for v in s.videos["train"]], val_owner, k722_label, classes, max_examples)
    val = _merge_split([v for s in scans for v in s.videos["val"]], None, k722_label, classes, max_examples)
    train_stats, val_stats = train[1], val[1]
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
    return K722Result(classes, train[0], val[0], mappings, report)
