"""The original code's config keys that this tree lacks (its ``utils/config.py`` defaults), so that a YAML file or
an ``--opts`` list copied from it is not refused as naming unknown keys: each one is mapped onto our key, or
accepted with a warning where it changes nothing (the original ignored it, or this project does what its value
asks), or refused with a line that says why and what to use instead. The MYCLIP keys this tree keeps are mapped
in ``configs/__init__.py``."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from yacs.config import CfgNode as CN

from evautil.progress import stderr_line

from .checks import _CHOICES
from .keys import ConfigError, _coerce, _get, _set_by

# Original key -> our key. The original's strings (never read there: always cosine, always AdamW) are sections here.
_MAPPED = {"TRAIN.LR_SCHEDULER": "TRAIN.LR_SCHEDULER.NAME", "TRAIN.OPTIMIZER": "TRAIN.OPTIMIZER.NAME"}


class _Unused(NamedTuple):
    default: Any  # the original's default, whose type a value must have
    accepted: tuple | None  # the values that change nothing (None: any value)
    note: str  # why an accepted value changes nothing
    refused: str  # why another value cannot be honoured, and what to do


_ORIGINAL_ONLY = {
    "MODEL.INIT_VALUES": _Unused(
        0.0, (0.0,), "as in the original, whose EVA models hard-code init_values 0: no layer-scale",
        "cannot be honoured: the original ignored it too (its EVA models hard-code init_values 0) and this model "
        "has no layer-scale; remove the key"),
    "MODEL.FIX_TEXT": _Unused(
        True, None, "as in the original's EVA models, which have no CLIP text tower to freeze", ""),
    "MODEL.FIX_FINE_TUNE": _Unused(
        0, (0,), "0 freezes no block, in the original as here",
        "has no equivalent: every block is trained here; remove the key (TRAIN.LAYER_WISE_DECAY gives the lower "
        "blocks smaller steps, MODEL.STOP_GRAD_CONV1 True freezes the patch embedding)"),
    "MODEL.RESUME": _Unused(
        "", ("",), "empty: no checkpoint to resume, the original's default",
        "is not a config key here: pass the checkpoint as train.py's --resume {value} instead"),
    "TRAIN.LR_SCHEDULER_WARMUP_PREFIX": _Unused(
        True, (True,), "the cosine starts after the warmup, as in the original with True",
        "has no equivalent: the cosine always starts after the warmup here (the original's default True); "
        "remove the key"),
    "MYCLIP.NUM_EXTRA_TOKENS": _Unused(
        1, (1,), "the model has one class token, as the original's with 1",
        "has no equivalent: the model always has one class token (the original's default 1); remove the key"),
    "MYCLIP.USE_SAME_PE": _Unused(False, None, "as in the original, where only its CLIP models read it", ""),
    "MYCLIP.USE_GLOBAL_ATTEN": _Unused(True, None, "as in the original, where only its CLIP models read it", ""),
}


def is_original_key(key: str, value: Any = None) -> bool:
    """Whether ``key`` is one of the original's keys handled here; a mapped key given a mapping (``TRAIN:
    OPTIMIZER: {NAME: adamw}`` in a file) is our section, merged as any other."""
    return key in _ORIGINAL_ONLY or (key in _MAPPED and not isinstance(value, dict))


def take_original_key(cfg: CN, key: str, value: Any, source: str, seen: dict) -> None:
    """Merge the original's ``key`` = ``value`` from ``source`` (a file or --opts) into ``cfg``: set the key it maps
    onto, or warn that it changes nothing, or raise ConfigError naming the key, the value and why."""
    if key in _MAPPED:
        target = _MAPPED[key]
        section, name = target.rsplit(".", 1)
        node = _get(cfg, section)
        node[name] = _coerce(key, node[name], value, source, seen.get(target))
        choices = _CHOICES.get(target, (node[name],))
        if node[name] not in choices:
            raise ConfigError(f"{source}: {key} = {node[name]!r} (read as {target}) is not one of "
                              f"{', '.join(repr(c) for c in choices)}")
        _set_by(seen, target, source)
        return
    entry = _ORIGINAL_ONLY[key]
    value = _coerce(key, entry.default, value, source, "the original's defaults")
    if entry.accepted is not None and value not in entry.accepted:
        raise ConfigError(f"{source}: {key} = {value!r} {entry.refused.format(value=value)}")
    _warn_ignored(source, key, value, entry.note)


# The original's MYCLIP keys this tree keeps (its YAML files and our saved configs name them) but never reads: the
# value this project does, and what it does instead of another value (the original's EVA models did the same
# whatever the value: their position embedding is learned, their forward ignores the text); another value got no word.
_KEPT_UNREAD = {
    "MYCLIP.USE_LEARNABLE_POS_EMB": (
        True, "the position embedding is always learned here, as in the original's EVA models"),
    "MYCLIP.USE_TEXT_EMBED": (
        False, "the model classifies the video alone: it has no text branch, and the forward of the original's EVA "
               "models ignored the text"),
}


def warn_unread_keys(cfg: CN, seen: dict) -> None:
    """One warning line for each kept-but-unread MYCLIP key that ``seen`` says a file or --opts set to a value
    other than the one this project does, naming the key, the value, its source and what happens instead."""
    for key, (done, instead) in _KEPT_UNREAD.items():
        section, name = key.rsplit(".", 1)
        value = _get(cfg, section)[name]
        if key in seen and value != done:
            _warn_ignored(seen[key], key, value, instead)


def _warn_ignored(source: str, key: str, value: Any, why: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # once per run, not once per process of a torchrun
        stderr_line(f"warning: {source}: {key} {value!r} is ignored ({why})")
