"""What a weights file holds, read safely (``models.checkpoint``'s reading, SPEC.md section 2).

A ``.safetensors`` file, or a ``torch.save`` one read by :func:`models.safe_load.load_torch_file` (no pickled code
runs), or an ``hf://`` reference to either, gives a flat ``{name: tensor}``: nested training checkpoints unwrapped, a
``module.`` prefix stripped, the EMA weights of a run that kept them, the config saved beside them. The checks a run
makes before it builds anything (a readable file, a head that scores the run's classes) read the same way, with the
tensors memory-mapped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Union

import torch

from evautil.errors import CheckpointError
from evautil.zip_check import is_safetensors, safetensors_unreadable

from .safe_load import READ_AGAIN, load_torch_file, refuse_empty

__all__ = ["EMA_NOTE", "COMPILE_NOTE", "PathLike", "named_path", "strip_module_prefix", "strip_compile_prefix",
           "read_checkpoint", "check_checkpoint", "head_mismatch", "read_state_dict", "safetensors_refusal"]

# The checkpoint reader's logger: its users set their handlers and levels there.
logger = logging.getLogger("models.checkpoint")

EMA_NOTE = "using its EMA weights (the ones the run evaluated), not its raw 'model' weights"
PathLike = Union[str, "os.PathLike[str]"]


def named_path(path: str, local: str | None = None) -> str:
    """``path`` as messages name it: as the user wrote it, and for an ``hf://`` reference the cached file it stands
    for (``local``, else found in the Hub cache without a request) in parentheses, whichever check or load speaks."""
    from .hub import cached_weights_path, hub_reference  # (models.hub imports models.checkpoint, which imports this)

    if hub_reference(path) is None:
        return path
    if local is None:
        try:
            local = cached_weights_path(path)
        except CheckpointError:  # a malformed reference: named as written
            local = None
    return f"{path} ({local})" if local else path


def _unwrap(obj: Any) -> Any:
    # Training checkpoints nest the weights under 'model' (the original's epoch_saving), DeepSpeed-style files
    # under 'module', Lightning-style ones under 'state_dict'; nesting can repeat. Raw state dicts pass through
    # (the original raised UnboundLocalError on them, SPEC.md section 6 item 9). A file of timm's EMA weights alone
    # holds them under 'model_ema' or 'state_dict_ema'; beside raw weights, those stay the ones read.
    # Only an entry that holds tensors is one: {'model': {'arch': ..., 'depth': ...}, 'state_dict': weights} (a
    # model's settings saved under 'model') was taken for the weights, and its settings called the file's keys.
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        for key in ("model", "module", "state_dict", "model_ema", "state_dict_ema"):
            if isinstance(obj.get(key), Mapping) and _holds_tensors(obj[key]):
                obj = obj[key]
                break
        else:
            break
    return obj


def _holds_tensors(mapping: Mapping, depth: int = 4) -> bool:
    """Whether ``mapping`` has a tensor among its values, or in a mapping among them (down to ``depth`` levels)."""
    return any(isinstance(v, torch.Tensor) or (depth > 1 and isinstance(v, Mapping) and _holds_tensors(v, depth - 1))
               for v in mapping.values())


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    # DDP-wrapped models save keys as 'module.<name>'. (A key that is no string names no tensor: kept as it is, for
    # the reader to drop.)
    return {k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k: v
            for k, v in state_dict.items()}


COMPILE_PREFIX = "_orig_mod."
COMPILE_NOTE = (f"its names carry torch.compile's prefix {COMPILE_PREFIX!r} (saved from a compiled model): read "
                "without it")


def strip_compile_prefix(state_dict: Mapping[str, Any], notes: list[str] | None = None) -> dict[str, Any]:
    """``state_dict`` without the ``_orig_mod.`` prefix a ``torch.compile``'d model saves its names with (``module.
    _orig_mod.`` under DDP: give it :func:`strip_module_prefix`'s result), when every name carries it;
    :data:`COMPILE_NOTE` is appended to ``notes`` then. A copy as it is when none does.

    Raises:
        ValueError: some names carry it and others not: two models' weights mixed, which neither prefix fits.
    """
    names = [k for k in state_dict if isinstance(k, str)]
    prefixed = sum(k.startswith(COMPILE_PREFIX) for k in names)
    if not prefixed:
        return dict(state_dict)
    if prefixed < len(names):
        plain = next(k for k in names if not k.startswith(COMPILE_PREFIX))
        raise ValueError(f"{prefixed} of its {len(names)} names carry torch.compile's prefix {COMPILE_PREFIX!r}, the "
                         f"others not (e.g. {plain!r}): the weights of a compiled model mixed with others; save one "
                         f"model's, a compiled one's as model._orig_mod.state_dict()")
    if notes is not None:
        notes.append(COMPILE_NOTE)
    # compile around a DDP model: its own 'module.' comes after
    return strip_module_prefix({k[len(COMPILE_PREFIX):] if isinstance(k, str) else k: v
                                for k, v in state_dict.items()})


def _read_file(path: str, mmap: bool) -> tuple[str, Any]:
    """The local file of ``path`` and what :func:`read_checkpoint` reads from it before it unwraps it: the object
    ``torch.load`` gives, or a safetensors file's tensors (with ``mmap``, its header's shapes as meta tensors; an
    exported file's with its recorded geometry as their config, :func:`_with_saved_geometry`)."""
    from .hub import resolve_weights_path  # (models.hub imports models.checkpoint, which imports this module)

    shown = path
    path = resolve_weights_path(path)  # a Hub reference: its cached local file; one miswritten: refused by name
    if path != shown:
        shown = named_path(shown, path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {shown}" + (" (a folder, not a file)"
                                                                         if os.path.isdir(path) else ""))
    if not is_safetensors(path):
        return path, load_torch_file(path, mmap, shown)
    refuse_empty(path, shown)
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if mmap:  # the header, checked against the file's size, and no tensor: shapes only (meta tensors)
                tensors = {name: torch.empty(f.get_slice(name).get_shape(), device="meta") for name in f.keys()}
        if not mmap:
            tensors = load_file(path, device="cpu")
    except Exception as error:
        raise safetensors_refusal(path, error, shown) from None
    return path, _with_saved_geometry(tensors, metadata)


# safetensors_unreadable's reasons that say what to do already
_WITH_ADVICE = ("a Git LFS pointer", "a torch.save file")


def safetensors_refusal(path: str, error: Exception, shown: str = "") -> CheckpointError:
    """The one line for a ``.safetensors`` file its reader refused with ``error``: what the file is instead, or what
    is wrong with its header (safetensors' words, "invalid JSON in header", "header too large", said of a header
    damaged), and what to do."""
    reason = safetensors_unreadable(path)
    if reason is None:
        lines = str(error).strip().splitlines()
        reason = f"its header is damaged ({lines[0] if lines else type(error).__name__})"
    advice = "" if reason.startswith(_WITH_ADVICE) else f"; {READ_AGAIN}"
    return CheckpointError(f"{shown or path}: not a readable safetensors file: {reason}{advice}")


def _with_saved_geometry(tensors: dict[str, torch.Tensor], metadata: Mapping[str, str]) -> Any:
    """A file written by ``models.weights_file`` records the clip geometry its positional table was made for: it is
    given as the config a training checkpoint saves beside its weights (``{'model': ..., 'config': ...}``), which
    tells the table's source grid when the file starts a model of other frames or input size. Other files: the
    tensors as they are."""
    from .weights_file import FORMAT  # (weights_file imports models.checkpoint, which imports this module)

    if metadata.get("format") != FORMAT:
        return tensors
    try:
        data = {key.upper(): int(metadata[key]) for key in ("num_frames", "input_size", "tubelet_size")}
    except (KeyError, ValueError):  # damaged metadata: the table's length alone decides, as for other files
        return tensors
    return {"model": tensors, "config": {"DATA": data}}


def read_checkpoint(path: PathLike, mmap: bool = False, notes_to: list[str] | None = None,
                    parsed: Any = None) -> tuple[dict[str, torch.Tensor], Any]:
    """Read a model state dict and the training config saved beside it from a ``.safetensors`` or ``torch.save``
    file (or an ``hf://`` reference to one), without running pickled code.

    Nested training checkpoints (``{'model': ...}``, ``{'module': ...}``, ``{'state_dict': ...}``) are unwrapped, a
    ``module.`` prefix is stripped, and torch.compile's ``_orig_mod.`` when every name has it (:data:`COMPILE_NOTE`
    appended to ``notes_to``), and non-tensor entries are dropped; a training checkpoint of this project with EMA
    weights (``'ema'``) gives those, which its run evaluated. The config is the file's ``'config'`` entry
    (the original's yacs node, read back as nested mappings, or this project's YAML text; for a ``.safetensors``
    file written by ``models.weights_file``, the DATA frames, input size and tubelet it records), None when absent.
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
        raise CheckpointError(f"{named_path(path, local)}: expected a state dict (a mapping of names to tensors), "
                              f"got {type(obj).__name__}")
    state_dict = {k: v for k, v in strip_module_prefix(obj).items()
                  if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state_dict:
        raise CheckpointError(f"{named_path(path, local)}: no tensors found "
                              f"(top-level keys: {sorted(map(str, obj))[:10]})")
    try:
        state_dict = strip_compile_prefix(state_dict, notes_to)
    except ValueError as error:
        raise CheckpointError(f"{named_path(path, local)}: {error}") from None
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
    :func:`models.checkpoint.weights_fit` to take instead of reading it again; None for a reference not fetched."""
    from .hub import hub_reference

    if not fetch_hub and hub_reference(os.fspath(path)) is not None:
        return None
    if parsed is None:
        parsed = _read_file(os.fspath(path), mmap=True)[1]
    state_dict, _ = read_checkpoint(path, parsed=parsed)
    problem = head_mismatch(state_dict, num_classes, class_mapping) if num_classes > 0 else None
    if problem:
        raise CheckpointError(f"{named_path(os.fspath(path))}: {problem}")
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
