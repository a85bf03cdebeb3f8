"""Configuration: yacs defaults (``configs/defaults.py``) + a YAML file + ``KEY VALUE`` overrides.

    from configs import load_config
    cfg = load_config("configs/k400.yaml", ["TRAIN.LR", "2e-6"])

``load_config`` differs from a plain ``CfgNode.merge_from_file`` in five ways: an unknown key fails with a
message naming the key and the file (or the command line) it came from; a key set twice in one mapping of a file
fails naming both lines; an integer given for a float key is accepted (the original K722 YAML writes
``WARMUP_EPOCHS: 5``); the original code's legacy keys are mapped (see ``_apply_legacy``), and those of its keys
this tree lacks are mapped, ignored with a warning or refused saying why (``original_keys``); and the merged values
are validated before the config is frozen.

The modules, one job each: ``keys`` (ConfigError; looking up, converting and naming keys), ``yaml_files`` (a file and
its BASE files), ``command_line`` (``--opts`` and a command's flags), ``checks`` (the values' checks),
``original_keys`` (the table of the original's keys that this tree lacks).
"""

from __future__ import annotations

import os
from typing import Iterable

from yacs.config import CfgNode as CN

from .checks import check_choice, validate
from .command_line import _merge_opts, as_typed, flags_then_opts, opts_last
from .defaults import get_cfg_defaults
from .keys import ConfigError, _coerce, _get, _set_by
from .original_keys import warn_unread_keys
from .yaml_files import CONFIG_DIR, _merge_file

__all__ = ["ConfigError", "load_config", "get_cfg_defaults", "check_choice", "opts_last", "flags_then_opts",
           "as_typed", "CONFIG_DIR"]


def _legacy_sets(seen: dict, legacy: str, key: str) -> bool:
    """Whether the original's ``legacy`` key, where set, gives ``key`` its value: ``key`` was not set, or was set
    by an earlier source (a BASE file, or the file before ``--opts``: the original's ``--opts MYCLIP.FT_FRAMES 16``
    over a recipe's PRETRAINED_FRAMES 8). Within one file ours wins (a saved config.yaml holds both), within
    ``--opts`` the later one, as for any key given twice."""
    if legacy not in seen:
        return False
    if key not in seen:
        return True
    order = list(seen)  # in the order the values were last set (keys._set_by)
    later = order.index(legacy) > order.index(key)
    return later and (seen[legacy] != seen[key] or seen[legacy] == "--opts")


def _apply_legacy(cfg: CN, seen: dict) -> None:
    """Map the original code's keys onto ours (only where the user set them, and not set ours after them)."""
    for name in ("USE_MEAN_POOLING", "STOP_GRAD_CONV1"):
        if _legacy_sets(seen, f"MYCLIP.{name}", f"MODEL.{name}"):
            cfg.MODEL[name] = cfg.MYCLIP[name]
    # The original read MODEL.PRETRAINED's grid from FT_FRAMES / FT_IMAGE_SIZE (and asserted it against the table).
    for legacy, key in (("FT_FRAMES", "PRETRAINED_FRAMES"), ("FT_IMAGE_SIZE", "PRETRAINED_INPUT_SIZE")):
        if _legacy_sets(seen, f"MYCLIP.{legacy}", f"MODEL.{key}"):
            cfg.MODEL[key] = cfg.MYCLIP[legacy]
    if cfg.TRAIN.OPT_LEVEL == "O0" and (cfg.TRAIN.PRECISION == "auto"
                                        or _legacy_sets(seen, "TRAIN.OPT_LEVEL", "TRAIN.PRECISION")):
        cfg.TRAIN.PRECISION = "fp32"


# Keys that name a file or folder: a leading ~ is the home folder, as the shell reads it (a YAML file or a quoted
# --opts value keeps it as written; the run then wrote OUTPUT ~/runs into a folder named ~ in the working folder).
_PATH_KEYS = ("DATA.ROOT", "DATA.TRAIN_FILE", "DATA.VAL_FILE", "DATA.LABEL_LIST", "MODEL.PRETRAINED",
              "MODEL.CLASS_MAPPING", "OUTPUT")


def _expand_home(cfg: CN) -> None:
    for key in _PATH_KEYS:
        node, name = (_get(cfg, key.rsplit(".", 1)[0]), key.rsplit(".", 1)[1]) if "." in key else (cfg, key)
        node[name] = os.path.expanduser(node[name])


def load_config(path: str | None = None, opts: Iterable[str] = (), freeze: bool = True,
                flags: Iterable[tuple[str, str, str]] = ()) -> CN:
    """Defaults <- YAML file (with its BASE files) <- a command's ``flags`` <- ``KEY VALUE`` overrides; legacy keys
    mapped; validated. ``flags``: ``(flag, key, value)`` for each flag of the command that sets a key (see
    :func:`flags_then_opts`), so that a message about that value names the flag the user typed."""
    cfg = get_cfg_defaults()
    seen: dict = {}  # key -> the file, flag or --opts that set it
    if path:
        _merge_file(cfg, path, seen)
    for flag, key, value in flags:
        node, name = (_get(cfg, key.rsplit(".", 1)[0]), key.rsplit(".", 1)[1]) if "." in key else (cfg, key)
        node[name] = _coerce(key, node[name], value, flag, seen.get(key))
        _set_by(seen, key, flag)
    _merge_opts(cfg, list(opts or ()), seen)
    _apply_legacy(cfg, seen)
    _expand_home(cfg)
    validate(cfg, seen)
    warn_unread_keys(cfg, seen)
    if freeze:
        cfg.freeze()
    return cfg
