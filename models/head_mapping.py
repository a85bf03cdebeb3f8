"""A checkpoint's classification head fitted to the model's classes (``models.checkpoint``'s conversion).

A head of another class count is gathered to the model's classes by a class mapping (``MODEL.CLASS_MAPPING``: an
integer ``.npy`` whose entry i is the checkpoint class of model class i, or -1 for a class the checkpoint lacks,
whose row starts at zero), checked before it is used, or else dropped and left at its fresh initialisation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["fit_head"]


def _load_class_mapping(class_mapping: Any, num_classes: int, source_classes: int) -> torch.Tensor:
    """Validate a class mapping (path to an integer .npy, or an array) and return it as an int64 index tensor."""
    name = f"class mapping {os.fspath(class_mapping)}" if isinstance(class_mapping, (str, os.PathLike)) \
        else "class mapping array"
    if isinstance(class_mapping, (str, os.PathLike)):
        if not os.path.isfile(class_mapping):
            raise FileNotFoundError(f"class mapping file not found: {os.fspath(class_mapping)}"
                                    + (" (a folder, not a file)" if os.path.isdir(class_mapping) else ""))
        with open(class_mapping, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY":  # numpy would call a text file pickled data, and open an .npz as an archive
            what = "a zip archive (np.savez's .npz?)" if magic.startswith(b"PK") else "no NumPy header"
            raise ValueError(f"{name}: not a .npy file ({what}): save the integer array with np.save")
        try:
            array = np.load(class_mapping, allow_pickle=False)
        except Exception as error:
            raise ValueError(f"{name}: not a readable .npy integer array ({error})") from error
    else:
        array = class_mapping.numpy() if isinstance(class_mapping, torch.Tensor) else np.asarray(class_mapping)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: expected a 1-D integer array, got shape {array.shape} dtype {array.dtype}")
    if len(array) != num_classes:
        raise ValueError(f"{name}: has {len(array)} entries but the model has {num_classes} classes")
    if len(array) and (array.min() < -1 or array.max() >= source_classes):
        raise ValueError(f"{name}: indices must lie in [0, {source_classes}) (the checkpoint head's classes), or "
                         f"be -1 for a class it lacks; got min {array.min()} max {array.max()}")
    return torch.from_numpy(array.astype(np.int64))


def _shared_head_rows(index: torch.Tensor) -> list[tuple[int, list[int]]]:
    """(checkpoint row, the model classes given it) for each row a class mapping gives to more than one class."""
    classes_of: dict[int, list[int]] = {}
    for cls, row in enumerate(index.tolist()):
        if row >= 0:  # -1: a class without a checkpoint row, shared with no other
            classes_of.setdefault(row, []).append(cls)
    return [(row, classes) for row, classes in sorted(classes_of.items()) if len(classes) > 1]


def fit_head(sd: dict[str, torch.Tensor], target: Mapping[str, tuple[int, ...]], class_mapping: Any,
             notes: list[str]) -> None:
    """The head in ``sd`` gathered by ``class_mapping`` to the model's classes, or dropped without one, in place;
    what was done is appended to ``notes`` (see ``models.checkpoint.convert_state_dict``)."""
    if "head.weight" in sd and "head.weight" in target and tuple(sd["head.weight"].shape) != target["head.weight"]:
        source_classes = sd["head.weight"].shape[0]
        if class_mapping is not None and len(target["head.weight"]) == 2:
            index = _load_class_mapping(class_mapping, target["head.weight"][0], source_classes)
            lacked = index < 0
            for k in ("head.weight", "head.bias"):
                if k in sd:  # the row of a class the checkpoint lacks (-1) starts at zero, a head's init is near it
                    rows = sd[k][index.clamp(min=0)]
                    sd[k] = rows.masked_fill(lacked.to(rows.device).view(-1, *[1] * (rows.ndim - 1)), 0)
            notes.append(f"head: {source_classes} checkpoint classes gathered to {len(index)} by the class mapping"
                         + (f"; {int(lacked.sum())} classes it gives -1 (none of the checkpoint's) start at zero"
                            if lacked.any() else ""))
            shared = _shared_head_rows(index)
            if shared:  # a start for fine-tuning; evaluated as it is, the classes of a row tie on every video
                more = f" (and {len(shared) - 5} more rows)" if len(shared) > 5 else ""
                notes.append("class mapping: classes given the same checkpoint row start with the same head row and "
                             "cannot be told apart until fine-tuned: "
                             + "; ".join(f"row {row} -> classes {', '.join(map(str, classes))}"
                                         for row, classes in shared[:5]) + more)
        else:
            for k in ("head.weight", "head.bias"):
                sd.pop(k, None)
            notes.append(f"head: checkpoint has {source_classes} classes, model {target['head.weight'][0]}; "
                         f"head dropped (no class mapping), left at its fresh init")
    elif class_mapping is not None:
        if "head.weight" not in target:
            notes.append("class mapping not applied: the model has no classification head (DATA.NUM_CLASSES 0)")
        elif "head.weight" not in sd:  # an image or backbone checkpoint: the model's head stays at its fresh init
            notes.append("class mapping not applied: the checkpoint has no classification head (no head.weight), "
                         "the model's is left at its fresh init")
        else:
            notes.append("class mapping not applied: the checkpoint head already matches the model's classes")
