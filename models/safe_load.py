"""A weights file read by ``torch.load`` without running pickled code (``models.checkpoint``'s reading).

``torch.load`` runs with ``weights_only=True``; the globals it refuses are retried only when they rebuild plain data
found in released training checkpoints (a yacs ``CfgNode`` config, numpy scalars and dtypes), and any other is
refused by name, never executed. A file torch cannot read at all (empty, damaged in its zip records, not a pickle)
is one ``CheckpointError`` line naming the file and what it is instead.
"""

from __future__ import annotations

import logging
import os
import pickle
import pickletools
import re
import zipfile
from collections import OrderedDict
from typing import Any, Callable

import numpy as np
import torch

from evautil.errors import CheckpointError, model_object_refusal
from evautil.zip_check import damaged_zip_record, unreadable_reason

__all__ = ["load_torch_file", "READ_AGAIN", "refuse_empty"]

# The checkpoint reader's logger: its users set their handlers and levels there.
logger = logging.getLogger("models.checkpoint")


def _numpy_scalar() -> Any:
    # numpy >= 2 keeps the implementation in numpy._core; numpy 1.x pickles name numpy.core.
    core = getattr(np, "_core", None) or np.core
    return core.multiarray.scalar


# Globals that weights_only loading refuses by default but which only rebuild plain data: the pickled yacs config
# and numpy scalars (e.g. 'max_accuracy') of the original's training checkpoints. Keys are the names recorded in
# the pickle; a resolver runs only once its name has been approved.
# The yacs CfgNode is rebuilt as an OrderedDict with the same items: the safe unpickler fills only exact
# dict/OrderedDict types, no yacs code runs, and the config is dropped with the other non-tensor entries anyway.
_SAFE_DATA_GLOBALS: dict[str, Callable[[], Any]] = {
    "yacs.config.CfgNode": lambda: OrderedDict,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
}
_NUMPY_DTYPE_CLASS = re.compile(r"^numpy\.dtypes\.(\w+DType)$")  # numpy >= 1.25 dtype classes, e.g. Float64DType


def _resolve_safe_global(name: str) -> list[Any] | None:
    """The objects to allowlist for an approved global name, or None when the name is not approved."""
    if name == "numpy.dtype":
        # np.dtype(...) is rebuilt by a BUILD on its class (e.g. numpy.dtypes.Float64DType), which the unpickler
        # checks separately from the GLOBAL opcode, so the dtype classes are approved with it.
        classes = [getattr(np.dtypes, c) for c in dir(getattr(np, "dtypes", None)) if c.endswith("DType")]
        return [np.dtype, *classes]
    if name in _SAFE_DATA_GLOBALS:
        return [_SAFE_DATA_GLOBALS[name]()]
    match = _NUMPY_DTYPE_CLASS.match(name)
    if match and hasattr(np, "dtypes") and hasattr(np.dtypes, match.group(1)):
        return [getattr(np.dtypes, match.group(1))]
    return None


_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+) was not an allowed global")

# What to do about a weights file whose bytes are not all there, or not the ones written.
READ_AGAIN = "save, copy or download it again"


def refuse_empty(path: str, shown: str = "") -> None:
    """CheckpointError naming ``path`` (as ``shown``) when it is empty: torch says only "EOFError", safetensors
    "header too small"."""
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{shown or path}: an empty file (0 bytes), which holds no weights (an interrupted save, "
                              f"copy or download?): {READ_AGAIN}")


def _pickles_a_module(path: str) -> bool:
    """Whether the pickle of ``path``'s zip archive rebuilds an ``nn.Module``: read as opcodes, never run, it sets the
    state every module has (``_parameters``, ``_modules``). A model class whose globals name no ``torch.nn`` class
    (one holding its parameters directly) is found so; torch's legacy format is not looked into."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return False
            strings = {arg for _, arg, _ in pickletools.genops(archive.read(name)) if isinstance(arg, str)}
    except Exception:  # noqa: BLE001 - a pickle that cannot be walked is refused as it was
        return False
    return {"_parameters", "_modules"} <= strings


def _refused_globals(path: str, error: Exception) -> list[str]:
    """Names of the globals weights_only loading refuses in ``path`` (all of them when torch can list them)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # legacy (non-zip) files: fall back to the name the error message carries
        return _REFUSED_GLOBAL.findall(str(error))


def _reason(error: Exception) -> str:
    """The informative line of torch's weights_only error (the rest is generic advice)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else line)
    return lines[0] if lines else type(error).__name__



def _refusal(path: str, name: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: refused to load the pickled global {name!r}; it was not executed. Only tensors and plain data "
        f"are read from checkpoints. If you trust the file, re-save just its state dict "
        f"(e.g. torch.save(ckpt['model'], ...)) or convert it to .safetensors.")


def _unreadable(path: str, error: Exception, shown: str) -> CheckpointError:
    """The error for a file torch cannot read at all, in one line naming the file (as ``shown``) and what is wrong
    with it."""
    return CheckpointError(f"{shown}: not a readable torch checkpoint: {unreadable_reason(path, error)}")


def load_torch_file(path: str, mmap: bool = False, shown: str = "") -> Any:
    """``torch.load(weights_only=True)``, retried with approved plain-data globals only. ``mmap``: see
    :func:`models.checkpoint.check_checkpoint` (a zip archive only; torch's legacy format is read whole). ``shown``:
    the file as messages name it (:func:`models.checkpoint_read.named_path`), ``path`` when empty."""
    shown = shown or path
    refuse_empty(path, shown)
    damage = damaged_zip_record(path, remember=mmap)  # torch.load would hand back the changed bytes as weights
    if damage:
        raise CheckpointError(f"{shown}: damaged: {damage}; {READ_AGAIN}")
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:  # first: a refused global is approved (plain data) or refused by
        # name below, and pickled code is never run
        refused, last_error = _refused_globals(path, error), error
        if not refused:  # no global to approve or refuse: the bytes are no pickle torch reads (a text file, a video,
            # an image given by mistake stops at its first byte, 'Unsupported operand <byte>')
            raise _unreadable(path, error, shown) from None
    except Exception as error:  # anything else means the file is unreadable: garbage bytes reach the weights-only
        # unpickler as arbitrary opcodes and fail with KeyError, IndexError, UnicodeDecodeError, ... not only
        # RuntimeError/EOFError (truncated zip or pickle)
        raise _unreadable(path, error, shown) from None
    allowed: list[Any] = []
    approved: set[str] = set()
    # Normally one retry: zip checkpoints list every global up front. Legacy files name one per failure.
    while True:
        new = [name for name in refused if name not in approved]
        model = model_object_refusal(shown, new)
        if model:
            raise CheckpointError(model) from None
        if not new:
            raise CheckpointError(f"{shown}: safe (weights_only) loading failed and the file was not unpickled "
                                  f"further; nothing in it was executed: {_reason(last_error)}")
        for name in new:
            objects = _resolve_safe_global(name)
            if objects is None:
                if _pickles_a_module(path):  # a model whose globals name no torch.nn class (its parameters its own)
                    raise CheckpointError(model_object_refusal(shown, ["torch.nn.Module"])) from None
                raise _refusal(shown, name) from last_error
            # (object, name) pairs: the name recorded in the pickle may differ from the object's current module
            # (numpy.core -> numpy._core; CfgNode -> OrderedDict).
            allowed += [(objects[0], name), *objects[1:]]
            approved.add(name)
        logger.debug("%s: allowing plain-data globals %s", shown, sorted(approved))
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as again:
            refused, last_error = _REFUSED_GLOBAL.findall(str(again)), again
        except Exception as error:  # damaged after the approved globals: as unreadable as above
            raise _unreadable(path, error, shown) from None
