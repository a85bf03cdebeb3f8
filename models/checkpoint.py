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

The rest of the project imports these names from here, over the parts that hold them: ``safe_load`` the
``torch.load`` that runs no pickled code, ``checkpoint_read`` what a file holds (formats, unwrapping, EMA weights,
the checks before a run), ``grid_fit`` the checkpoint's width, patches and positional grid fitted to the model's,
``head_mapping`` a head of another class count gathered by a class mapping or dropped. Their log lines are this
module's logger's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from evautil.errors import CheckpointError
from evautil.zip_check import is_safetensors

from .checkpoint_read import (COMPILE_NOTE, EMA_NOTE, PathLike, check_checkpoint, head_mismatch, named_path,
                              read_checkpoint, read_state_dict, strip_compile_prefix, strip_module_prefix)
from .grid_fit import check_patch_kernel, check_width, fit_pos_embed, inflate_patch_kernel, patch_and_tubelet
from .head_mapping import fit_head
from .pos_embed import grid_from_sizes

__all__ = ["CheckpointError", "EMA_NOTE", "COMPILE_NOTE", "is_safetensors", "read_checkpoint", "read_state_dict",
           "check_checkpoint", "head_mismatch", "weights_fit", "convert_state_dict", "load_pretrained",
           "layers_the_model_lacks", "pretrained_source_grid", "MODES"]

logger = logging.getLogger(__name__)

MODES = ("eva", "eva_k722")


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
    notes: list[str] = []
    # a new dict: the caller's mapping is left untouched
    sd = strip_compile_prefix(strip_module_prefix(state_dict), notes)
    own = model.state_dict()
    target = {k: tuple(v.shape) for k, v in own.items()}

    check_width(sd, target)
    if "patch_embed.proj.weight" in sd and "patch_embed.proj.weight" in target:
        check_patch_kernel(sd["patch_embed.proj.weight"], target["patch_embed.proj.weight"])
    if "pos_embed" in sd and "pos_embed" in target:
        kernel = sd.get("patch_embed.proj.weight")
        sd["pos_embed"] = fit_pos_embed(sd["pos_embed"], target["pos_embed"], model, mode, source_grid,
                                        checkpoint_config, notes, kernel.ndim if kernel is not None else 0,
                                        model_dtype=own["pos_embed"].dtype)

    # --- patch embedding: Conv2d kernel -> Conv3d -----------------------------------------------------------------
    kernel_dtype = own["patch_embed.proj.weight"].dtype if "patch_embed.proj.weight" in own else torch.float32
    inflate_patch_kernel(sd, target, notes, model_dtype=kernel_dtype)

    # --- classification head ----------------------------------------------------------------------------------
    fit_head(sd, target, class_mapping, notes)

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
        raise ValueError(f"{named_path(os.fspath(path))}: {error}") from error
    keys = model.state_dict().keys()
    if not any(k in keys for k in converted):
        found = _foreign_prefix(converted, keys)
        advice = ": the weights of another model, or names saved with another prefix"
        if found:  # e.g. a backbone saved inside a larger model: say which prefix, and how to save without it
            advice = (f": its names carry the prefix {found[0]!r}, without which {found[1]} of them are the model's; "
                      f"save them without it, {{k.removeprefix({found[0]!r}): v for k, v in state_dict.items()}}")
        raise CheckpointError(f"{named_path(os.fspath(path))}: none of its {len(converted)} tensors is a tensor of the "
                              f"model (its names begin {', '.join(sorted(converted)[:3])}; the model's are e.g. "
                              f"{', '.join(list(keys)[:3])}){advice}")
    return converted, read_notes + notes


def _foreign_prefix(names: Mapping[str, Any], keys: Any) -> tuple[str, int] | None:
    """The name prefix ('backbone.', 'encoder.', Lightning's 'model.') whose removal makes the most of ``names`` the
    model's ``keys``, with that count; None when no prefix makes any of them one."""
    counts: dict[str, int] = {}
    for name in names:
        for i, char in enumerate(name):
            if char == "." and name[i + 1:] in keys:
                counts[name[:i + 1]] = counts.get(name[:i + 1], 0) + 1
    return max(counts.items(), key=lambda item: item[1]) if counts else None


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
    patch, tubelet = patch_and_tubelet(model)
    return grid_from_sizes(frames, size, patch, tubelet, "MODEL.PRETRAINED_FRAMES / PRETRAINED_INPUT_SIZE")
