"""Reading checkpoints safely and converting EVA checkpoints into this project's video model (SPEC.md section 2).

Three layers, so each can be tested alone:

- ``read_state_dict(path)``: file -> flat ``{name: tensor}``. Never executes pickled code: ``torch.load`` runs with
  ``weights_only=True`` and only a short allowlist of plain data types found in released training checkpoints
  (a yacs ``CfgNode`` config, numpy scalars) may be added.
- ``convert_state_dict(state_dict, model, mode)``: pure mapping of a foreign state dict onto ``model``'s keys and
  shapes (positional-embedding resampling, Conv2d -> Conv3d inflation, class-mapped heads).
- ``load_pretrained(model, path, mode)``: the two above plus ``load_state_dict(strict=False)`` and logging.

Modes: ``'eva'`` converts the EVA image checkpoint (``eva_psz14.pt``) into a video model; ``'eva_k722'`` adapts a
video checkpoint (e.g. the 8-frame Kinetics-722 one) to another frame count, grid or class set.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Callable, Union

import numpy as np
import torch
from torch import nn

from evautil.errors import CheckpointError
from evautil.zip_check import damaged_zip_record, is_safetensors, safetensors_cut_short, unreadable_reason

from .pos_embed import find_source_grid, grid_from_config, grid_from_sizes, resample_image_table, resample_video_table

__all__ = ["CheckpointError", "EMA_NOTE", "is_safetensors", "read_checkpoint", "read_state_dict", "check_checkpoint",
           "head_mismatch", "weights_fit", "convert_state_dict", "load_pretrained", "layers_the_model_lacks",
           "pretrained_source_grid", "MODES"]

logger = logging.getLogger(__name__)

MODES = ("eva", "eva_k722")
EMA_NOTE = "using its EMA weights (the ones the run evaluated), not its raw 'model' weights"
PathLike = Union[str, "os.PathLike[str]"]


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------
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


def _named(path: str, local: str | None = None) -> str:
    """``path`` as messages name it: as the user wrote it, and for an ``hf://`` reference the cached file it stands
    for (``local``, else found in the Hub cache without a request) in parentheses, whichever check or load speaks."""
    if not path.startswith("hf://"):
        return path
    if local is None:
        from .hub import cached_weights_path

        try:
            local = cached_weights_path(path)
        except CheckpointError:  # a malformed reference: named as written
            local = None
    return f"{path} ({local})" if local else path


def _refusal(path: str, name: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: refused to load the pickled global {name!r}; it was not executed. Only tensors and plain data "
        f"are read from checkpoints. If you trust the file, re-save just its state dict "
        f"(e.g. torch.save(ckpt['model'], ...)) or convert it to .safetensors.")


def _unreadable(path: str, error: Exception, shown: str) -> CheckpointError:
    """The error for a file torch cannot read at all, in one line naming the file (as ``shown``) and what is wrong
    with it."""
    return CheckpointError(f"{shown}: not a readable torch checkpoint: {unreadable_reason(path, error)}")


def _torch_load(path: str, mmap: bool = False, shown: str = "") -> Any:
    """``torch.load(weights_only=True)``, retried with approved plain-data globals only. ``mmap``: see
    :func:`check_checkpoint` (a zip archive only; torch's legacy format is read whole). ``shown``: the file as
    messages name it (:func:`_named`), ``path`` when empty."""
    shown = shown or path
    if os.path.getsize(path) == 0:  # torch says only "EOFError"
        raise CheckpointError(f"{shown}: an empty file (0 bytes)")
    damage = damaged_zip_record(path, remember=mmap)  # torch.load would hand back the changed bytes as weights
    if damage:
        raise CheckpointError(f"{shown}: damaged: {damage}")
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
        if not new:
            raise CheckpointError(f"{shown}: safe (weights_only) loading failed and the file was not unpickled "
                                  f"further; nothing in it was executed: {_reason(last_error)}")
        for name in new:
            objects = _resolve_safe_global(name)
            if objects is None:
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


def _unwrap(obj: Any) -> Any:
    # Training checkpoints nest the weights under 'model' (the original's epoch_saving), DeepSpeed-style files
    # under 'module', Lightning-style ones under 'state_dict'; nesting can repeat. Raw state dicts pass through
    # (the original raised UnboundLocalError on them, SPEC.md section 6 item 9).
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        for key in ("model", "module", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            break
    return obj


def _strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    # DDP-wrapped models save keys as 'module.<name>'.
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def _read_file(path: str, mmap: bool) -> tuple[str, Any]:
    """The local file of ``path`` and what :func:`read_checkpoint` reads from it before it unwraps it: the object
    ``torch.load`` gives, or a safetensors file's tensors (with ``mmap``, its header's shapes as meta tensors)."""
    shown = path
    if path[:4].lower() == "hf:/":  # a Hub reference, the cached local file, or one miswritten (models/hub.py)
        from .hub import resolve_weights_path

        path = resolve_weights_path(path)
        shown = _named(shown, path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {shown}" + (" (a folder, not a file)"
                                                                         if os.path.isdir(path) else ""))
    if not is_safetensors(path):
        return path, _torch_load(path, mmap, shown)
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        if mmap:  # the header, checked against the file's size, and no tensor: shapes only (meta tensors)
            with safe_open(path, framework="pt", device="cpu") as f:
                return path, {name: torch.empty(f.get_slice(name).get_shape(), device="meta") for name in f.keys()}
        return path, load_file(path, device="cpu")
    except Exception as error:
        raise CheckpointError(f"{shown}: not a readable safetensors file: "
                              f"{safetensors_cut_short(path) or error}") from error


def read_checkpoint(path: PathLike, mmap: bool = False, notes_to: list[str] | None = None,
                    parsed: Any = None) -> tuple[dict[str, torch.Tensor], Any]:
    """Read a model state dict and the training config saved beside it from a ``.safetensors`` or ``torch.save``
    file (or an ``hf://`` reference to one), without running pickled code.

    Nested training checkpoints (``{'model': ...}``, ``{'module': ...}``, ``{'state_dict': ...}``) are unwrapped, a
    ``module.`` prefix is stripped and non-tensor entries are dropped; a training checkpoint of this project with EMA
    weights (``'ema'``) gives those, which its run evaluated. The config is the file's ``'config'`` entry
    (the original's yacs node, read back as nested mappings, or this project's YAML text), None when absent.
    ``mmap``: see :func:`check_checkpoint`. ``notes_to``: :data:`EMA_NOTE` is appended to it when the EMA weights
    are the ones read (the log line alone is seen only where this logger is shown, which no tool or run did).
    ``parsed``: the file as :func:`check_checkpoint` returned it (read memory-mapped), taken instead of reading it
    again (a parse costs per tensor: thousands for a billion-parameter model).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file needs a pickled global outside the plain-data allowlist (it is not executed),
            cannot be read, or holds no tensors.
    """
    path = os.fspath(path)
    local, obj = _read_file(path, mmap) if parsed is None else (None, parsed)
    config = obj.get("config") if isinstance(obj, Mapping) else None
    if isinstance(obj, Mapping) and isinstance(obj.get("ema"), Mapping) and obj["ema"]:
        # A training checkpoint of a run with TRAIN.EMA: its evaluations and best.pth used the averaged weights,
        # so evaluating, predicting or fine-tuning from the file uses them too ("model" is the raw weights).
        logger.info("%s: using its EMA weights (the ones the run evaluated)", path)
        if notes_to is not None:
            notes_to.append(EMA_NOTE)
        obj = obj["ema"]
    obj = _unwrap(obj)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{_named(path, local)}: expected a state dict (a mapping of names to tensors), "
                              f"got {type(obj).__name__}")
    state_dict = {k: v for k, v in _strip_module_prefix(obj).items() if isinstance(v, torch.Tensor)}
    if not state_dict:
        raise CheckpointError(f"{_named(path, local)}: no tensors found (top-level keys: {sorted(map(str, obj))[:10]})")
    return state_dict, (None if isinstance(config, torch.Tensor) else config)


def check_checkpoint(path: PathLike, fetch_hub: bool = True, num_classes: int = 0,
                     class_mapping: Any = None, parsed: Any = None) -> Any:
    """Raise what :func:`read_checkpoint` would for a missing, unreadable, damaged or refused file, without loading
    its tensors into memory (memory-mapped): a run names a bad file before it writes anything. The CRC-32 check
    reads the file, and the load that follows in this process does not read it for that again. An ``hf://``
    reference is fetched into the Hub cache here (the load finds it there), or, without ``fetch_hub``, left to
    the load. ``num_classes`` > 0: the weights are to be used as they are (evaluated, predicted with), so a head
    of another class count without a ``class_mapping`` is refused too (:func:`head_mismatch`).

    Returns the file as read (memory-mapped; ``parsed`` when given: the file as a caller already read it), for
    :func:`weights_fit` to take instead of reading it again; None for a reference not fetched."""
    if not fetch_hub and os.fspath(path).startswith("hf://"):
        return None
    if parsed is None:
        parsed = _read_file(os.fspath(path), mmap=True)[1]
    state_dict, _ = read_checkpoint(path, parsed=parsed)
    problem = head_mismatch(state_dict, num_classes, class_mapping) if num_classes > 0 else None
    if problem:
        raise CheckpointError(f"{_named(os.fspath(path))}: {problem}")
    return parsed


def head_mismatch(state_dict: Mapping[str, torch.Tensor], num_classes: int, class_mapping: Any = None) -> str | None:
    """Why weights whose head is ``state_dict``'s cannot score ``num_classes`` classes as they are, or None: a head of
    another class count is dropped by the conversion (left at its random init) unless a class mapping selects
    ``num_classes`` of its rows, which needs the checkpoint to have at least that many."""
    head = state_dict.get("head.weight")
    if head is None or head.ndim != 2 or head.shape[0] == num_classes:
        return None
    have = int(head.shape[0])
    if class_mapping and have > num_classes:
        return None
    advice = f"set DATA.NUM_CLASSES {have} to use it as trained"
    if have > num_classes:
        advice += f", or MODEL.CLASS_MAPPING to take {num_classes} of its classes"
    return f"its head has {have} classes and DATA.NUM_CLASSES is {num_classes}: {advice}"


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """The state dict of ``read_checkpoint(path)`` (same unwrapping, same refusal of pickled code)."""
    return read_checkpoint(path)[0]


# ----------------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------------
def _model_grid(model: nn.Module) -> tuple[int, int]:
    """(T', G): temporal and spatial token grid of ``model`` (T' tubelets of frames, each of G x G patches)."""
    grid = getattr(model, "grid_size", None)
    if grid is None:
        grid = model.patch_embed.grid_size
    return int(grid[0]), int(grid[1])


def _isqrt_exact(n: int) -> int | None:
    r = math.isqrt(n)
    return r if r * r == n else None


def _patch_and_tubelet(model: nn.Module) -> tuple[int, int]:
    kernel = model.patch_embed.proj.kernel_size  # (tubelet, patch, patch)
    return int(kernel[1]), int(kernel[0])


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
    if len(array) and (array.min() < 0 or array.max() >= source_classes):
        raise ValueError(f"{name}: indices must lie in [0, {source_classes}) (the checkpoint head's classes), "
                         f"got min {array.min()} max {array.max()}")
    return torch.from_numpy(array.astype(np.int64))


def _shared_head_rows(index: torch.Tensor) -> list[tuple[int, list[int]]]:
    """(checkpoint row, the model classes given it) for each row a class mapping gives to more than one class."""
    classes_of: dict[int, list[int]] = {}
    for cls, row in enumerate(index.tolist()):
        classes_of.setdefault(row, []).append(cls)
    return [(row, classes) for row, classes in sorted(classes_of.items()) if len(classes) > 1]


def _size(hw: tuple[int, ...]) -> str:
    return f"{hw[0]}" if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


def _check_width(sd: Mapping[str, torch.Tensor], target: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse the weights of a model of another width, naming both widths and the presets of the checkpoint's
    dimensions: the first tensor compared (pos_embed) would only say that two shapes differ."""
    key = next((k for k in ("cls_token", "pos_embed", "patch_embed.proj.bias") if k in sd and k in target), None)
    if key is None or sd[key].ndim == 0 or len(target[key]) == 0 or sd[key].shape[-1] == target[key][-1]:
        return
    width = int(sd[key].shape[-1])
    kernel = sd.get("patch_embed.proj.weight")
    patch = int(kernel.shape[-1]) if kernel is not None and kernel.ndim in (4, 5) else None
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    from .factory import ARCHS  # (factory imports this module)

    presets = [name for name, p in ARCHS.items() if p["embed_dim"] == width and p["depth"] == depth
               and patch in (None, p["patch_size"])]
    theirs = f"{width} wide" + (f", {patch} px patches" if patch else "") + f", {depth} blocks"
    hint = f"MODEL.ARCH {' or '.join(presets)}" if presets else "no MODEL.ARCH preset has these dimensions"
    raise ValueError(f"{key}: the checkpoint's model is {width} wide and MODEL.ARCH's {target[key][-1]}: the weights "
                     f"of another model ({theirs}: {hint}; checkpoint shape {tuple(sd[key].shape)}, model shape "
                     f"{target[key]})")


def _check_patch_kernel(kernel: torch.Tensor, target: tuple[int, ...]) -> None:
    """Refuse a patch kernel whose patch or tubelet size differs from the model's, naming both sizes.

    Runs before pos_embed is converted: its source grid is computed in the model's patches, so a checkpoint with
    other patches would otherwise fail there with a grid that seems not to fit its own table.
    """
    if len(target) != 5 or kernel.ndim not in (4, 5):
        return  # left to the final shape check, which names both shapes
    theirs, ours = tuple(kernel.shape[-2:]), tuple(target[-2:])
    if theirs != ours:
        raise ValueError(f"patch_embed.proj.weight: MODEL.ARCH's patch size ({_size(ours)} px) differs from the "
                         f"checkpoint's ({_size(theirs)} px); use a MODEL.ARCH with {_size(theirs)} px patches "
                         f"(checkpoint kernel {tuple(kernel.shape)}, model kernel {target})")
    # A 4-D kernel is an image one, inflated over the model's tubelet below ('eva' mode): no tubelet to compare.
    if kernel.ndim == 5 and kernel.shape[2] != target[2]:
        raise ValueError(f"patch_embed.proj.weight: DATA.TUBELET_SIZE ({target[2]}) differs from the checkpoint's "
                         f"tubelet size ({kernel.shape[2]}) (checkpoint kernel {tuple(kernel.shape)}, "
                         f"model kernel {target})")


def _convert_pos_embed(pe: torch.Tensor, target: tuple[int, ...], model: nn.Module, mode: str,
                       source_grid: tuple[Any, Any] | None, checkpoint_config: Any, notes: list[str],
                       kernel_dims: int = 0) -> torch.Tensor:
    """The checkpoint's positional table fitted to the model's (T', G, G) grid (see ``convert_state_dict``).
    ``kernel_dims``: how many dimensions the checkpoint's patch kernel has (4: an image model's, 5: a video
    model's; 0: it has none)."""
    # The original 'eva' branch deleted pos_embed and then read it again (KeyError), and its resampling asserted a
    # hard-coded source frame count (SPEC.md section 6 items 5 and 6); both cases are handled here instead.
    frames, size = _model_grid(model)
    patch, tubelet = _patch_and_tubelet(model)
    if pe.ndim != 3 or pe.shape[0] != 1 or pe.shape[2] != target[2]:
        raise ValueError(f"pos_embed: checkpoint shape {tuple(pe.shape)} does not match model shape {target}")
    num = pe.shape[1] - 1
    if mode == "eva":
        if tuple(pe.shape) == target:
            return pe
        if kernel_dims == 5:  # a video table whose length is a square (16 x 16 x 16 = 64²) would pass for an image's
            raise ValueError(f"pos_embed: the checkpoint is a video model's (a 3-D patch kernel and a table of {num} "
                             f"patch tokens), not an image model's, which MODEL.PRETRAINED_MODE eva converts: set "
                             f"MODEL.PRETRAINED_MODE eva_k722 to adapt a video checkpoint (model shape {target})")
        s0 = _isqrt_exact(num)
        if s0 is None:
            raise ValueError(f"pos_embed: checkpoint shape {tuple(pe.shape)} is not an image table (1, 1+S², D); "
                             f"model shape {target}; use mode 'eva_k722' for video checkpoints")
        if s0 != size:  # extension: the original required img_size 224 (no spatial resampling)
            pe = resample_image_table(pe, s0, size)
            notes.append(f"pos_embed: spatial grid resampled {s0}x{s0} -> {size}x{size} (bicubic)")
        # The same spatial table for every frame; no temporal component (as the original).
        pe = torch.cat((pe[:, :1], pe[:, 1:].repeat(1, frames, 1)), dim=1)
        notes.append(f"pos_embed: image table repeated over {frames} temporal tokens ({frames * tubelet} frames in "
                     f"tubelets of {tubelet}) -> {tuple(pe.shape)}")
        return pe
    saved = grid_from_config(checkpoint_config, patch, tubelet) if checkpoint_config is not None else None
    try:
        src, how, set_aside = find_source_grid(num, (frames, size), patch, explicit=source_grid, from_config=saved,
                                               tubelet_size=tubelet)
    except ValueError:
        s0 = _isqrt_exact(num)
        if kernel_dims != 4 or s0 is None:
            raise
        # an image table has no frames to give: asking for MODEL.PRETRAINED_FRAMES (and calling its grid
        # "1 frames of SxS", one candidate among others) sent its user looking for a video geometry it lacks
        raise ValueError(f"pos_embed: the checkpoint is an image model's (a 2-D patch kernel and a table of "
                         f"{s0}x{s0} patches, {s0 * patch} px, without frames), not a video model's: it starts a "
                         "video model for training as MODEL.PRETRAINED with MODEL.PRETRAINED_MODE eva; to predict "
                         "or extract features, give a video model's checkpoint (one trained from it)") from None
    if set_aside:
        notes.append(f"pos_embed: {set_aside}")
    if src == (frames, size):
        return pe
    # in tokens, said so: with tubelets of 2 a source of 4 temporal tokens is the 8 frames MODEL.PRETRAINED_FRAMES says
    notes.append(f"pos_embed: source grid {src[0]}x{src[1]}x{src[1]} tokens, {src[0] * tubelet} frames of "
                 f"{src[1] * patch} px ({how})")
    notes.append(f"pos_embed: resampled (T', S, S) in tokens {src[0]}x{src[1]}x{src[1]} -> {frames}x{size}x{size} "
                 f"(trilinear, align_corners=False)")
    return resample_video_table(pe, src, (frames, size))


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module, mode: str,
                       class_mapping: Any = None, source_grid: tuple[Any, Any] | None = None,
                       checkpoint_config: Any = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map an EVA checkpoint's state dict onto ``model`` (an ``EVAVideoTransformer``); the input is not modified.

    Args:
        state_dict: flat ``{name: tensor}`` as returned by ``read_state_dict``.
        model: the target model; only its state-dict shapes and token grid are read (a meta-device model works).
        mode: ``'eva'``: image checkpoint -> video. The (1, 1+G², D) positional table is copied to every one of
            the model's T' frames (bicubically resized first if the grid differs, an extension); a 4-D patch
            kernel (D, 3, p, p) is inflated to (D, 3, tubelet, p, p) / tubelet so a static clip embeds as the image
            did. ``'eva_k722'``: video checkpoint. pos_embed is trilinearly resampled from the checkpoint's
            (T0, S0, S0) grid (see ``models.pos_embed.find_source_grid``) to the model's (T', G, G).
            Keys the model lacks (``mask_token``, ``lm_head.*``, ``norm.*`` with mean pooling) are kept, for
            ``load_state_dict(strict=False)`` to report as unexpected; the image model's final ``norm`` is not
            mapped to ``fc_norm`` (the original does not either).
        class_mapping: used when the checkpoint head has a different class count than the model: a path to an
            integer ``.npy`` (or an array) of length num_classes whose entry i is the checkpoint class of model
            class i; head rows are gathered. Without it such a head is dropped (left to its fresh init).
        source_grid: (T0, S0) in tokens of the checkpoint's pos_embed as the user gave it (either part may be
            None), e.g. from ``MODEL.PRETRAINED_FRAMES`` / ``PRETRAINED_INPUT_SIZE`` via ``grid_from_sizes``.
        checkpoint_config: the ``'config'`` entry saved in the checkpoint (a mapping or YAML text), if any; its
            ``DATA.NUM_FRAMES`` / ``INPUT_SIZE`` give the source grid when ``source_grid`` does not.

    Returns:
        (new_state_dict, notes): notes are human-readable lines on what was changed or dropped.

    Raises:
        ValueError: unknown mode, a bad class mapping, a tensor whose shape cannot be made to fit (the message
            names the key and both shapes), or a positional table whose source grid is ambiguous (the message
            names the candidates and the keys that decide).
    """
    if mode not in MODES:
        raise ValueError(f"unknown checkpoint mode {mode!r}; expected one of {MODES}")
    sd = _strip_module_prefix(state_dict)  # a new dict: the caller's mapping is left untouched
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    notes: list[str] = []

    _check_width(sd, target)
    if "patch_embed.proj.weight" in sd and "patch_embed.proj.weight" in target:
        _check_patch_kernel(sd["patch_embed.proj.weight"], target["patch_embed.proj.weight"])
    if "pos_embed" in sd and "pos_embed" in target:
        kernel = sd.get("patch_embed.proj.weight")
        sd["pos_embed"] = _convert_pos_embed(sd["pos_embed"], target["pos_embed"], model, mode, source_grid,
                                             checkpoint_config, notes, kernel.ndim if kernel is not None else 0)

    # --- patch embedding: Conv2d kernel -> Conv3d -----------------------------------------------------------------
    key = "patch_embed.proj.weight"
    if key in sd and key in target and sd[key].ndim == 4 and len(target[key]) == 5:
        tubelet = target[key][2]
        # Each of the tubelet's frames gets w/tubelet, so a clip of identical frames embeds exactly as the image.
        sd[key] = sd[key].unsqueeze(2).repeat(1, 1, tubelet, 1, 1) / tubelet
        notes.append(f"{key}: 2-D kernel inflated over tubelet {tubelet} -> {tuple(sd[key].shape)}")

    # --- classification head ----------------------------------------------------------------------------------
    if "head.weight" in sd and "head.weight" in target and tuple(sd["head.weight"].shape) != target["head.weight"]:
        source_classes = sd["head.weight"].shape[0]
        if class_mapping is not None and len(target["head.weight"]) == 2:
            index = _load_class_mapping(class_mapping, target["head.weight"][0], source_classes)
            for k in ("head.weight", "head.bias"):
                if k in sd:
                    sd[k] = sd[k][index]
            notes.append(f"head: {source_classes} checkpoint classes gathered to {len(index)} by the class mapping")
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
        notes.append("class mapping not applied: the checkpoint head already matches the model's classes")

    # --- everything else must fit as is -------------------------------------------------------------------------
    for k, v in sd.items():
        if k in target and tuple(v.shape) != target[k]:
            raise ValueError(f"{k}: checkpoint shape {tuple(v.shape)} does not match model shape {target[k]}")
    return sd, notes


def load_pretrained(model: nn.Module, path: PathLike, mode: str = "eva_k722", class_mapping: Any = None,
                    source_grid: tuple[Any, Any] | None = None,
                    notes_to: list[str] | None = None,
                    misfit_is_error: bool = False) -> tuple[list[str], list[str]]:
    """Read ``path``, convert it for ``model`` (see ``convert_state_dict``) and load it non-strictly.

    Missing keys, and tensors of layers the model does not have (``layers_the_model_lacks``), are logged as a
    warning, or at info level with ``misfit_is_error`` (the caller refuses such weights with its own one-line error,
    which the warning would only precede).

    The checkpoint's saved config, when it has one, tells its positional grid; ``source_grid`` overrides it. What
    the conversion changed (a resampled positional embedding, a gathered head) is logged and, when ``notes_to`` is
    given, appended to it (the tools show it as warnings), after :data:`EMA_NOTE` for a file whose EMA weights
    are the ones read.

    Returns:
        (missing_keys, unexpected_keys) of ``model.load_state_dict(..., strict=False)``; both are also logged.

    Raises:
        ValueError: as ``convert_state_dict``, with the file named.
        CheckpointError: as ``read_checkpoint``, or none of the file's tensors is one of the model's.
    """
    converted, notes = _converted_for(model, path, mode, class_mapping, source_grid, mmap=False)
    result = model.load_state_dict(converted, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    logger.info("loaded %s (mode %s): %d tensors", os.fspath(path), mode, len(converted) - len(unexpected))
    for note in notes:
        logger.info("  %s", note)
    if notes_to is not None:
        notes_to.extend(notes)
    if missing:
        logger.log(logging.INFO if misfit_is_error else logging.WARNING, "missing keys (left at their init): %s",
                   missing)
    foreign = layers_the_model_lacks(unexpected, model)
    if foreign:
        logger.log(logging.INFO if misfit_is_error else logging.WARNING,
                   "tensors of layers the model does not have (ignored: a deeper or other MODEL.ARCH?): %s", foreign)
    if len(unexpected) > len(foreign):
        logger.info("unexpected keys (ignored): %s", [k for k in unexpected if k not in foreign])
    if not missing and not unexpected:
        logger.info("all keys matched")
    return missing, unexpected


def _converted_for(model: nn.Module, path: PathLike, mode: str, class_mapping: Any, source_grid: tuple[Any, Any] | None,
                   mmap: bool, parsed: Any = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``path``'s state dict converted for ``model`` (``convert_state_dict``), with the file named in its errors;
    refused when none of its tensors is one of the model's (loading nothing would leave it at its initialisation).
    The notes begin with read_checkpoint's (:data:`EMA_NOTE`)."""
    read_notes: list[str] = []
    state_dict, config = read_checkpoint(path, mmap=mmap, notes_to=read_notes, parsed=parsed)
    try:
        converted, notes = convert_state_dict(state_dict, model, mode, class_mapping=class_mapping,
                                              source_grid=source_grid, checkpoint_config=config)
    except ValueError as error:
        raise ValueError(f"{_named(os.fspath(path))}: {error}") from error
    keys = model.state_dict().keys()
    if not any(k in keys for k in converted):
        raise CheckpointError(f"{_named(os.fspath(path))}: none of its {len(converted)} tensors is a tensor of the "
                              f"model (its names begin {', '.join(sorted(converted)[:3])}; the model's are e.g. "
                              f"{', '.join(list(keys)[:3])}): the weights of another model, or names saved with "
                              "another prefix")
    return converted, read_notes + notes


def weights_fit(model: nn.Module, path: PathLike, mode: str = "eva_k722", class_mapping: Any = None,
                source_grid: tuple[Any, Any] | None = None, parsed: Any = None) -> tuple[list[str], list[str]]:
    """What :func:`load_pretrained` of the same arguments would find, from the file's names and shapes alone (its
    tensors memory-mapped, a ``.safetensors`` file's header only; ``model`` may be on the meta device): (missing
    keys, ``layers_the_model_lacks``), and the same errors for a shape that cannot be made to fit or weights of
    none of the model's tensors. A run checks this before it indexes its lists (which can take hours). ``parsed``:
    the file as :func:`check_checkpoint` returned it, not read again."""
    converted, _ = _converted_for(model, path, mode, class_mapping, source_grid, mmap=True, parsed=parsed)
    keys = model.state_dict().keys()
    missing = [k for k in keys if k not in converted]
    return missing, layers_the_model_lacks([k for k in converted if k not in keys], model)


def layers_the_model_lacks(unexpected: list[str], model: nn.Module) -> list[str]:
    """The unexpected keys that belong to one of the model's own parts (``blocks.40.*`` for a 40-block model,
    ``blocks.0.attn.q_bias`` for a model without qkv bias): weights of a deeper or differently built model, which
    loaded into this one would leave part of what was trained unused. The keys an EVA checkpoint carries for parts
    a fine-tuned model drops (``mask_token``, ``lm_head.*``, ``norm.*`` with mean pooling) are not among them."""
    parts = {k.split(".", 1)[0] for k in model.state_dict()}
    return [k for k in unexpected if k.split(".", 1)[0] in parts]


def pretrained_source_grid(cfg: Any, model: nn.Module) -> tuple[Any, Any] | None:
    """(T0, S0) in tokens of ``MODEL.PRETRAINED`` from ``MODEL.PRETRAINED_FRAMES`` / ``PRETRAINED_INPUT_SIZE``.

    None when neither is set (0): the checkpoint's own config, or its token count, decides.
    """
    frames, size = int(cfg.MODEL.PRETRAINED_FRAMES), int(cfg.MODEL.PRETRAINED_INPUT_SIZE)
    if not frames and not size:
        return None
    patch, tubelet = _patch_and_tubelet(model)
    return grid_from_sizes(frames, size, patch, tubelet, "MODEL.PRETRAINED_FRAMES / PRETRAINED_INPUT_SIZE")
