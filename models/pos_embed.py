"""Positional-embedding tables: which (frames, grid) a checkpoint's table was trained for, and resampling it.

A video checkpoint's ``pos_embed`` is a flat (1, 1 + T0·S0², D) table: its length alone does not say which
(T0, S0) it holds (2048 patch tokens are 8 temporal tokens of 16x16, 2 of 32x32, 32 of 8x8, ...). T0 counts
temporal tokens, one per tubelet of frames; messages give it in frames (T0 x tubelet size), the unit of the keys
that set it. The original read the geometry from its config (``MYCLIP.FT_FRAMES`` / ``FT_IMAGE_SIZE``);
``find_source_grid`` takes it, in order, from

1. an explicit geometry (``MODEL.PRETRAINED_FRAMES`` / ``MODEL.PRETRAINED_INPUT_SIZE``, which the original's
   ``MYCLIP.FT_FRAMES`` / ``FT_IMAGE_SIZE`` map onto), either part may be left out and is then derived;
2. the checkpoint's own training config (``DATA.NUM_FRAMES`` / ``TUBELET_SIZE`` / ``INPUT_SIZE``, or the model's
   ``num_frames`` / ``tubelet_size`` / ``img_size`` saved flat), when it has one;
3. the model's own grid when the token counts are equal (resuming or evaluating a checkpoint of the same model);
4. otherwise the token count, only when a single (T0, S0) with S0 >= 2 fits it; more than one is refused with a
   message naming the candidates and the keys that decide.

A table without the cls slot, of exactly T0·S0² rows (from a model whose cls token had no position), is read so
by ``find_table_grid`` when a geometry of sources 1 to 3 fits its whole length and none fits it with the slot, or,
with only the token count to go by, when a grid fits it only without the slot; a length that both readings fit is
refused by name.

Both sources 1 and 2 must agree with each other, and source 2 with the table's length. An explicit geometry that
does not fit the table's length (a recipe's, given for the checkpoint it names, while another checkpoint was
passed) is set aside, with a note, when source 2 or 3 decides; otherwise it is an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from evautil.progress import counted

__all__ = ["GRID_KEYS", "grid_from_sizes", "grid_from_config", "candidate_grids", "find_source_grid",
           "find_table_grid", "resample_video_table", "resample_image_table"]

ONLY_GRID = "the only grid that fits the token count"  # how a grid guessed from the token count alone is named
GRID_KEYS = "MODEL.PRETRAINED_FRAMES / MODEL.PRETRAINED_INPUT_SIZE (the original's MYCLIP.FT_FRAMES / FT_IMAGE_SIZE)"

Grid = tuple[int, int]
PartialGrid = tuple[Any, Any]  # (T0 or None, S0 or None)


def grid_from_sizes(frames: int, input_size: int, patch_size: int, tubelet_size: int, origin: str) -> PartialGrid:
    """(T0, S0) in tokens from a frame count and an input size in pixels; 0 or None leaves that part unknown.

    Raises:
        ValueError: a size that does not divide into the model's tubelets or patches (names ``origin``).
    """
    t0 = s0 = None
    if frames:
        if frames % tubelet_size:
            raise ValueError(f"{origin}: {frames} frames do not divide into tubelets of {tubelet_size}")
        t0 = frames // tubelet_size
    if input_size:
        if input_size % patch_size:
            raise ValueError(f"{origin}: input size {input_size} px does not divide into {patch_size} px patches")
        s0 = input_size // patch_size
    return t0, s0


def _lookup(config: Mapping, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def grid_from_config(config: Any, patch_size: int, tubelet_size: int) -> PartialGrid | None:
    """(T0, S0) of the model a checkpoint was trained as, from the config saved in it (None when it has none).

    ``config`` is the checkpoint's ``'config'`` entry: the original's yacs node (read back as nested mappings),
    this project's YAML text, or the model's constructor arguments (``num_frames``, ``img_size``, ``tubelet_size``).
    The patch size is the model's: the patch kernel is loaded as is, so it must match
    (``convert_state_dict`` refuses a checkpoint whose kernel has other patches before it gets here).
    """
    if isinstance(config, str):
        import yaml

        try:
            config = yaml.safe_load(config)
        except yaml.YAMLError:
            return None
    if not isinstance(config, Mapping):
        return None
    keys = ("DATA.NUM_FRAMES", "DATA.INPUT_SIZE", "DATA.TUBELET_SIZE")
    if _lookup(config, keys[0]) is None and _lookup(config, keys[1]) is None:
        # the model's constructor arguments, flat (the original model's, as its parity fixture saves them)
        keys = ("num_frames", "img_size", "tubelet_size")
    frames, size = _lookup(config, keys[0]), _lookup(config, keys[1])
    tubelet = _lookup(config, keys[2]) or tubelet_size
    if not isinstance(frames, int) or not isinstance(size, int) or not isinstance(tubelet, int):
        return None
    return grid_from_sizes(frames, size, patch_size, tubelet, f"the checkpoint's config {keys[0]} / {keys[1]}")


def _frames(tokens: Any, tubelet_size: int) -> str:
    """"1 frame", "8 frames", "? frames" (an unknown count) for ``tokens`` temporal tokens of ``tubelet_size`` frames.

    In frames, the unit of ``MODEL.PRETRAINED_FRAMES`` and ``DATA.NUM_FRAMES``: with tubelets of 2, a table of 4
    temporal tokens is the 8 frames those keys must say."""
    return counted(tokens * tubelet_size, "frame") if isinstance(tokens, int) else f"{tokens} frames"


def _complete(partial: PartialGrid, num_tokens: int, origin: str, tubelet_size: int) -> Grid:
    """Fill the unknown part of (T0, S0) from the token count and check that T0·S0² equals it."""
    t0, s0 = partial
    if t0 and not s0:
        s0 = math.isqrt(num_tokens // t0) if num_tokens % t0 == 0 else 0
    elif s0 and not t0:
        t0 = num_tokens // (s0 * s0)
    if not t0 or not s0 or t0 * s0 * s0 != num_tokens:
        raise ValueError(f"pos_embed: {origin} gives {_frames(t0 or '?', tubelet_size)} of {s0 or '?'}x{s0 or '?'} "
                         f"patches, but the checkpoint's table has {num_tokens} patch tokens")
    return int(t0), int(s0)


def candidate_grids(num_tokens: int) -> list[Grid]:
    """Every (T0, S0) with T0·S0² = ``num_tokens`` and S0 >= 2, fewest temporal tokens first."""
    return [(num_tokens // (s * s), s) for s in range(math.isqrt(num_tokens), 1, -1) if num_tokens % (s * s) == 0]


def find_source_grid(num_tokens: int, model_grid: Grid, patch_size: int, explicit: PartialGrid | None = None,
                     from_config: PartialGrid | None = None, *, tubelet_size: int) -> tuple[Grid, str, str | None]:
    """The (T0, S0) of a checkpoint's patch table, how it was decided (see the module docstring), and, when the
    explicit geometry does not fit this table and was set aside, what was set aside (else None).

    An explicit geometry that does not fit the table's length at all cannot be this file's: a recipe's
    ``MODEL.PRETRAINED_FRAMES`` describes the checkpoint it names (K722's 8 frames), not another one given in its
    place (a 16-frame K400 checkpoint). It is set aside when the checkpoint's own config or the model's equal token
    count decides instead (never for a guess from the token count alone).

    Grids are in tokens; ``tubelet_size`` (the model's, which the checkpoint's patch kernel must share) turns
    their temporal part into the frames the messages name.

    Raises:
        ValueError: a given geometry does not fit the table and nothing else decides, the two sources disagree, or
            the guess is ambiguous (the message names the candidates in frames and pixels and the keys to set).
    """
    given, misfit = None, None
    if explicit is not None and any(explicit):
        try:
            given = (_complete(explicit, num_tokens, GRID_KEYS, tubelet_size),
                     "given by " + GRID_KEYS.split(" (")[0])
        except ValueError as e:
            misfit = e
    if from_config is not None and any(from_config):
        saved = _complete(from_config, num_tokens, "the checkpoint's config", tubelet_size)
        if given and given[0] != saved:
            raise ValueError(f"pos_embed: {GRID_KEYS.split(' (')[0]} say {_frames(given[0][0], tubelet_size)} "
                             f"of {given[0][1] * patch_size} px but the checkpoint's config says "
                             f"{_frames(saved[0], tubelet_size)} of {saved[1] * patch_size} px")
        given = given or (saved, "from the checkpoint's config")
    if given is None and model_grid[0] * model_grid[1] ** 2 == num_tokens:
        given = (model_grid, "the model's own (equal token count)")
    if misfit is not None:
        if given is None:
            raise ValueError(f"{misfit}; set them to this checkpoint's frames and input size (0 for its config's, "
                             "or the model's when the token counts are equal)") from None
        set_aside = f"{str(misfit).removeprefix('pos_embed: ')}: set aside, the geometry is {given[1]}"
        return given[0], given[1], set_aside
    if given:
        return given[0], given[1], None
    candidates = candidate_grids(num_tokens)
    if len(candidates) == 1:
        return candidates[0], ONLY_GRID, None
    named = ", ".join(f"{_frames(t, tubelet_size)} of {s}x{s} ({s * patch_size} px)" for t, s in candidates) or "none"
    raise ValueError(f"pos_embed: the checkpoint has {num_tokens} patch tokens and no config that says its geometry; "
                     f"it could be {named}. Set {GRID_KEYS} to the checkpoint's frames and input size")


def find_table_grid(length: int, model_grid: Grid, patch_size: int, explicit: PartialGrid | None = None,
                    from_config: PartialGrid | None = None, *,
                    tubelet_size: int) -> tuple[bool, Grid, str, str | None]:
    """Whether a video table of ``length`` rows starts with a cls slot, and its patch grid as
    :func:`find_source_grid` gives it (grid, how it was decided, what was set aside).

    The table is read with the slot (1 + T0·S0² rows) whenever a given, saved or the model's geometry decides so,
    as before; without it (T0·S0² rows) when such a geometry fits only the whole length, or when only the whole
    length has a grid to guess. A table of 64 rows read with a slot would otherwise be "the only grid" of 63 patch
    tokens, 7x3x3, and resampled from it into nonsense.

    Raises:
        ValueError: neither reading fits (the message of the reading with the slot, or of the one without when only
            its length has candidate grids), or both fit only as guesses (both named, with the keys to set).
    """
    kwargs = dict(explicit=explicit, from_config=from_config, tubelet_size=tubelet_size)
    readings: dict[bool, tuple[Grid, str, str | None] | ValueError] = {}
    for with_slot in (True, False):
        try:
            readings[with_slot] = find_source_grid(length - with_slot, model_grid, patch_size, **kwargs)
        except ValueError as error:
            readings[with_slot] = error
        found = readings[with_slot]
        if not isinstance(found, ValueError) and found[1] != ONLY_GRID:  # decided: the first reading that fits
            return (with_slot, *found)
    slot, bare = readings[True], readings[False]
    if isinstance(slot, ValueError) and isinstance(bare, ValueError):
        raise bare if not candidate_grids(length - 1) and candidate_grids(length) else slot
    if isinstance(bare, ValueError):
        return (True, *slot)
    if isinstance(slot, ValueError):
        return (False, *bare)
    (t1, s1), (t0, s0) = slot[0], bare[0]
    raise ValueError(f"pos_embed: the checkpoint's table of {length} rows and no config that says its geometry could "
                     f"be a cls slot and {_frames(t1, tubelet_size)} of {s1}x{s1} ({s1 * patch_size} px), or "
                     f"{_frames(t0, tubelet_size)} of {s0}x{s0} ({s0 * patch_size} px) without a cls slot. Set "
                     f"{GRID_KEYS} to the checkpoint's frames and input size")


def resample_video_table(pos_embed: torch.Tensor, src: Grid, dst: Grid) -> torch.Tensor:
    """(1, 1+T0·S0², D) -> (1, 1+T1·S1², D): cls slot kept, patch table interpolated on its (T, S, S) grid.

    Trilinear with align_corners=False, as the original; computed in fp32 and cast back.
    """
    (t0, s0), (t1, s1) = src, dst
    cls, tokens = pos_embed[:, :1], pos_embed[:, 1:]
    dim = tokens.shape[-1]
    grid = tokens.float().transpose(1, 2).reshape(1, dim, t0, s0, s0)  # token index t·S²+h·S+w -> (t, h, w)
    grid = F.interpolate(grid, size=(t1, s1, s1), mode="trilinear", align_corners=False)
    tokens = grid.reshape(1, dim, t1 * s1 * s1).transpose(1, 2).to(pos_embed.dtype)
    return torch.cat((cls, tokens), dim=1)


def resample_image_table(pos_embed: torch.Tensor, s0: int, s1: int) -> torch.Tensor:
    """(1, 1+S0², D) -> (1, 1+S1², D) by bicubic interpolation of the spatial table (cls slot kept)."""
    cls, tokens = pos_embed[:, :1], pos_embed[:, 1:]
    dim = tokens.shape[-1]
    grid = tokens.float().transpose(1, 2).reshape(1, dim, s0, s0)
    grid = F.interpolate(grid, size=(s1, s1), mode="bicubic", align_corners=False)
    return torch.cat((cls, grid.reshape(1, dim, s1 * s1).transpose(1, 2).to(pos_embed.dtype)), dim=1)
