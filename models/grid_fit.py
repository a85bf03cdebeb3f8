"""A checkpoint's geometry fitted to the model's (``models.checkpoint``'s conversion, SPEC.md section 2).

Refusals that name what differs (the model's width, its patch or tubelet size) before any tensor is compared, the
positional table brought onto the model's (T', G, G) token grid (an image table repeated over the frames, a video
table resampled from its source grid, ``models.pos_embed``), and an image model's 2-D patch kernel inflated over the
model's tubelet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .pos_embed import find_table_grid, grid_from_config, resample_image_table, resample_video_table

__all__ = ["patch_and_tubelet", "check_width", "check_patch_kernel", "fit_pos_embed", "inflate_patch_kernel"]


def _model_grid(model: nn.Module) -> tuple[int, int]:
    """(T', G): temporal and spatial token grid of ``model`` (T' tubelets of frames, each of G x G patches)."""
    grid = getattr(model, "grid_size", None)
    if grid is None:
        grid = model.patch_embed.grid_size
    return int(grid[0]), int(grid[1])


def _isqrt_exact(n: int) -> int | None:
    r = math.isqrt(n)
    return r if r * r == n else None


def patch_and_tubelet(model: nn.Module) -> tuple[int, int]:
    """(patch, tubelet) of ``model``'s patch embedding, in pixels and frames."""
    kernel = model.patch_embed.proj.kernel_size  # (tubelet, patch, patch)
    return int(kernel[1]), int(kernel[0])


def _size(hw: tuple[int, ...]) -> str:
    return f"{hw[0]}" if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


def check_width(sd: Mapping[str, torch.Tensor], target: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse the weights of a model of another width, naming both widths and the presets of the checkpoint's
    dimensions: the first tensor compared (pos_embed) would only say that two shapes differ."""
    key = next((k for k in ("cls_token", "pos_embed", "patch_embed.proj.bias") if k in sd and k in target), None)
    if key is None or sd[key].ndim == 0 or len(target[key]) == 0 or sd[key].shape[-1] == target[key][-1]:
        return
    width = int(sd[key].shape[-1])
    kernel = sd.get("patch_embed.proj.weight")
    patch = int(kernel.shape[-1]) if kernel is not None and kernel.ndim in (4, 5) else None
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    from .factory import ARCHS  # (factory imports models.checkpoint, which imports this module)

    presets = [name for name, p in ARCHS.items() if p["embed_dim"] == width and p["depth"] == depth
               and patch in (None, p["patch_size"])]
    theirs = f"{width} wide" + (f", {patch} px patches" if patch else "") + f", {depth} blocks"
    hint = f"MODEL.ARCH {' or '.join(presets)}" if presets else "no MODEL.ARCH preset has these dimensions"
    raise ValueError(f"{key}: the checkpoint's model is {width} wide and MODEL.ARCH's {target[key][-1]}: the weights "
                     f"of another model ({theirs}: {hint}; checkpoint shape {tuple(sd[key].shape)}, model shape "
                     f"{target[key]})")


def check_patch_kernel(kernel: torch.Tensor, target: tuple[int, ...]) -> None:
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


def fit_pos_embed(pe: torch.Tensor, target: tuple[int, ...], model: nn.Module, mode: str,
                  source_grid: tuple[Any, Any] | None, checkpoint_config: Any, notes: list[str],
                  kernel_dims: int = 0, model_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The checkpoint's positional table fitted to the model's (T', G, G) grid (see
    ``models.checkpoint.convert_state_dict``). ``kernel_dims``: how many dimensions the checkpoint's patch kernel
    has (4: an image model's, 5: a video model's; 0: it has none). ``model_dtype``: the dtype of the model's
    table; a float16 or bfloat16 table fitted to a float32 one comes back in float32."""
    # The original 'eva' branch deleted pos_embed and then read it again (KeyError), and its resampling asserted a
    # hard-coded source frame count (SPEC.md section 6 items 5 and 6); both cases are handled here instead.
    frames, size = _model_grid(model)
    patch, tubelet = patch_and_tubelet(model)
    if pe.ndim != 3 or pe.shape[0] != 1 or pe.shape[2] != target[2]:
        raise ValueError(f"pos_embed: checkpoint shape {tuple(pe.shape)} does not match model shape {target}")
    num = pe.shape[1] - 1
    # Resampling computes in float32: rounding its result back to the checkpoint's half precision, only for it to be
    # copied into a float32 model, lost precision for nothing.
    if pe.dtype in (torch.float16, torch.bfloat16) and model_dtype == torch.float32:
        pe = pe.float()
    if mode == "eva":
        if tuple(pe.shape) == target:
            return pe
        if kernel_dims == 5:  # a video table whose length is a square (16 x 16 x 16 = 64²) would pass for an image's
            raise ValueError(f"pos_embed: the checkpoint is a video model's (a 3-D patch kernel and a table of {num} "
                             f"patch tokens), not an image model's, which MODEL.PRETRAINED_MODE eva converts: set "
                             f"MODEL.PRETRAINED_MODE eva_k722 to adapt a video checkpoint (model shape {target})")
        if _isqrt_exact(num) is None and _isqrt_exact(num + 1) is not None:  # S² rows: a table without cls slot
            pe, num = _with_zero_cls_slot(pe, notes), num + 1
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
        with_slot, src, how, set_aside = find_table_grid(pe.shape[1], (frames, size), patch, explicit=source_grid,
                                                         from_config=saved, tubelet_size=tubelet)
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
    if not with_slot:
        pe = _with_zero_cls_slot(pe, notes)
    if src == (frames, size):
        return pe
    # in tokens, said so: with tubelets of 2 a source of 4 temporal tokens is the 8 frames MODEL.PRETRAINED_FRAMES says
    notes.append(f"pos_embed: source grid {src[0]}x{src[1]}x{src[1]} tokens, {src[0] * tubelet} frames of "
                 f"{src[1] * patch} px ({how})")
    notes.append(f"pos_embed: resampled (T', S, S) in tokens {src[0]}x{src[1]}x{src[1]} -> {frames}x{size}x{size} "
                 f"(trilinear, align_corners=False)")
    return resample_video_table(pe, src, (frames, size))


def _with_zero_cls_slot(pe: torch.Tensor, notes: list[str]) -> torch.Tensor:
    """A table of patch tokens alone, with the model's cls slot put first as zeros: the checkpoint's cls token had
    no position added, and cls + 0 keeps it so."""
    notes.append(f"pos_embed: the checkpoint's table has no cls slot ({pe.shape[1]} rows, all patch tokens): the "
                 "cls token's position is zeros, as it had none")
    return torch.cat((pe.new_zeros(1, 1, pe.shape[2]), pe), dim=1)


def inflate_patch_kernel(sd: dict[str, torch.Tensor], target: Mapping[str, tuple[int, ...]],
                         notes: list[str], model_dtype: torch.dtype = torch.float32) -> None:
    """An image model's Conv2d patch kernel in ``sd`` made the model's Conv3d one, in place (``'eva'`` mode).
    ``model_dtype``: the dtype of the model's kernel; a float16 or bfloat16 kernel inflated for a float32 one comes
    back in float32, else in its own dtype."""
    key = "patch_embed.proj.weight"
    if key in sd and key in target and sd[key].ndim == 4 and len(target[key]) == 5:
        tubelet, kernel = target[key][2], sd[key]
        # Each of the tubelet's frames gets w/tubelet, so a clip of identical frames embeds exactly as the image.
        # w/3, w/5, w/6 are not exact in half precision: computed in float32, and rounded back to the checkpoint's
        # dtype only for a model that keeps it (a float32 model's frames then sum to the kernel within float32's
        # rounding, not half precision's, times the tubelet).
        wide = kernel.to(torch.promote_types(kernel.dtype, torch.float32))
        inflated = wide.unsqueeze(2).repeat(1, 1, tubelet, 1, 1) / tubelet
        half = kernel.dtype in (torch.float16, torch.bfloat16)
        sd[key] = inflated.to(kernel.dtype) if half and model_dtype != torch.float32 else inflated
        notes.append(f"{key}: 2-D kernel inflated over tubelet {tubelet} -> {tuple(sd[key].shape)}")
