"""The class list of the official Kinetics releases: a k400/k600/k700 dataset's labels are positions in the
released heads' sorted class names, so its classes must be exactly those (a missing class would shift every later
label by one). Without the released label files (``--official-labels DIR``) only the class count is checked."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .common import KineticsError

__all__ = ["OFFICIAL_CLASS_COUNTS", "official_classes", "match_official"]

# Class counts of the releases whose labels must match the released heads (ids = the classes' sorted order).
OFFICIAL_CLASS_COUNTS = {"k400": 400, "k600": 600, "k700": 700}


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
        if os.path.isfile(path) or os.path.islink(path):  # a link whose target is gone is named with its target
            return _in_label_order(path, read_labels_csv(path))
    # asked for, and silently absent, the check would fall back to the class count alone
    raise KineticsError(f"--official-labels {labels_dir!r} holds no {' or '.join(names)} for dataset {name}")


def _in_label_order(path: str, names: list[str]) -> list[str]:
    """``names``, the classes of the released label file ``path`` in id order, once they are in the order the lists
    number them: sorted, each once. A file in another order (``sort``'s, which skips spaces: "skiing" before "ski
    jumping") had its ids replaced by sorted positions even where ``--allow-empty-classes`` keeps "the official ids",
    and with every class present was refused with an empty list of differences."""
    for i in range(1, len(names)):
        if names[i] <= names[i - 1]:
            what = "is given twice" if names[i] == names[i - 1] else f"sorts before id {i - 1} {names[i - 1]!r}"
            raise KineticsError(f"labels CSV {path!r}: id {i} {names[i]!r} {what}; a label is the position of its "
                                f"class in the sorted class names (by code point, as Python sorts), so this file's "
                                f"ids would not be the lists' labels: number the sorted names, each once")
    return names


def match_official(name: str, root: str, classes: list[str], allow_empty_classes: bool,
                    labels_dir: str | None, classes_from: str = "class folders",
                    where: Mapping[str, str] | None = None) -> list[str]:
    """The classes whose positions are the labels: ``classes``, or for k400/k600/k700 the official list, which the
    tree's class names must match (a missing folder would shift every later label by one); with
    ``allow_empty_classes`` a missing class is an empty one and every label keeps its official id. Without the
    released list (``labels_dir``) only the class count can be checked: another count is an error.
    ``classes_from`` says in the messages where the classes come from (``class folders``, ``annotated classes``);
    ``where`` (``{class: "line <n> of <CSV>"}``) names the line giving each class that is not an official one."""
    official = official_classes(name, labels_dir)
    expected = OFFICIAL_CLASS_COUNTS.get(name.lower())
    if official is None:
        if expected is None or expected == len(classes):
            return classes
        raise KineticsError(
            f"dataset {name}: {len(classes)} {classes_from} in {root!r}, the official {name} has {expected}, and every "
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

    def some(names: list[str], at: Mapping[str, str]) -> str:
        shown = ", ".join(repr(c) + (f" on {at[c]}" if c in at else "") for c in names[:5])
        return f"{len(names)} ({shown}{', ...' if len(names) > 5 else ''})"

    fix = ("rename those folders (folder names with '_'" if classes_from == "class folders" else
           "fix those labels in the annotation CSVs (labels with '_'")
    hint = ("fix the download, or pass --allow-empty-classes to keep the official ids (the missing classes get no "
            "videos)" if not unexpected else
            f"{fix}: --underscore-to-space), or give the dataset another name "
            f"(e.g. {name}sub=PATH) to number its own classes 0..N-1")
    # an unexpected label is a typo in one row of a CSV of thousands: name that row
    parts = [f"unexpected: {some(unexpected, where or {})}"] if unexpected else []
    if missing and allow_empty_classes:  # allowed: 399 names of them hid the one class that is refused
        parts.append(f"{len(missing)} missing, allowed by --allow-empty-classes")
    elif missing:
        parts.insert(0, f"missing: {some(missing, {})}")
    diff = "; ".join(parts)
    raise KineticsError(f"dataset {name}: the {classes_from} in {root!r} differ from the {len(official)} official "
                        f"{name} classes, and every label after a difference would shift; {diff}; {hint}")
