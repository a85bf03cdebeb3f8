"""Reusing an output folder: the config of the checkpoint a run would resume against the config given now.

A resumed run continues the saved one, so a changed learning rate, seed, data list or model would otherwise be
half applied (the schedule and optimizer come from the checkpoint) or fail later (a new seed does not match the
saved data position). Keys that define the run are compared before anything is written or indexed; a difference
stops the run with a list of them unless TRAIN.ALLOW_CONFIG_CHANGE is on. Keys that only say how the run is
executed (workers, logging, evaluation views, checkpoint cadence, kernels) may change freely.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import yaml

from configs import ConfigError
from evautil.files import same_path

from .checkpoint_io import REQUIRED_KEYS
from .checkpointing import Checkpointer
from .run_files import EARLIER_RUNS_DIR

__all__ = ["EXECUTION_KEYS", "PATH_KEYS", "config_differences", "saved_config", "check_resume_config"]

# Keys (or "SECTION." prefixes) that do not change what is trained: how data is read, initial weights (replaced by
# the checkpoint), numerics and kernels, evaluation, logging and checkpoint cadence.
EXECUTION_KEYS = (
    "BASE", "OUTPUT", "SAVE_FREQ", "SAVE_STEPS", "SAVE_MINUTES", "KEEP_LAST", "PRINT_FREQ", "TEST.", "LOG.",
    "MYCLIP.", "DATA.DATASET", "DATA.LABEL_LIST", "DATA.DECODE_DEVICE", "DATA.CPU_DECODER", "DATA.CPU_PACK_GOPS",
    "DATA.NVDEC_PACK_GOPS", "DATA.NVDEC_CODECS", "DATA.NVDEC_MAX_BIT_DEPTH", "DATA.NVDEC_THREADS", "DATA.NVDEC_AFFINE",
    "DATA.CPU_ROUTE_MAX_SHARE", "DATA.VIDEO_TIMEOUT_S",
    "DATA.NUM_THREADS", "DATA.NUM_WORKERS", "DATA.PREFETCH", "DATA.INDEX_WORKERS", "DATA.INDEX_FULL_DECODE",
    "DATA.STRICT", "DATA.OUTPUT_DTYPE", "MODEL.PRETRAINED", "MODEL.PRETRAINED_MODE", "MODEL.CLASS_MAPPING",
    "MODEL.ATTN_IMPL", "TRAIN.AUTO_RESUME", "TRAIN.ALLOW_CONFIG_CHANGE", "TRAIN.USE_CHECKPOINT", "TRAIN.COMPILE",
    "TRAIN.FUSED_OPTIMIZER", "TRAIN.PRECISION", "TRAIN.OPT_LEVEL", "TRAIN.SKIP_NONFINITE",
)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for name, value in tree.items():
        out.update(_flatten(value, f"{prefix}{name}."))
    return out


def _defines_the_run(key: str) -> bool:
    return not any(key == k or (k.endswith(".") and key.startswith(k)) for k in EXECUTION_KEYS)


# Keys that define the run and name a file or folder: another spelling of the same one (a trailing /, a relative
# path for an absolute one, a symbolic link) is no change (the lists' contents are checked apart, by their digest).
PATH_KEYS = ("DATA.ROOT", "DATA.TRAIN_FILE", "DATA.VAL_FILE")


def config_differences(saved_yaml: str, current_yaml: str) -> list[str]:
    """``"KEY saved -> now"`` for every key that defines the run and differs. Keys that only one side knows
    (added or removed by a code update) are not compared; the ``PATH_KEYS`` differ only when they name another
    file or folder (a relative one from the working folder)."""
    saved, current = _flatten(yaml.safe_load(saved_yaml) or {}), _flatten(yaml.safe_load(current_yaml) or {})
    return [f"{key} {saved[key]!r} -> {value!r}" for key, value in current.items()
            if key in saved and _defines_the_run(key) and saved[key] != value
            and not (key in PATH_KEYS and _same_place(saved[key], value))]


def _same_place(saved: Any, now: Any) -> bool:
    """Whether two values of a path key name one file or folder ("" is the working folder, as for "."): a resume
    whose command spelled DATA.ROOT with a trailing / was refused as a run with another config."""
    return isinstance(saved, str) and isinstance(now, str) and same_path(saved or ".", now or ".")


def saved_config(path: str, state: Any = None) -> tuple[str, bool] | None:
    """(config YAML, whether it ends an epoch) of checkpoint ``path``, read without its tensors (memory-mapped),
    or of ``state``, the checkpoint as already read (not parsed again: a billion-parameter model's training
    checkpoint holds thousands of tensors); None when the file does not load or has no config (errors are
    reported by the resume itself)."""
    if state is None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - damaged or refused files are named by Trainer.resume
            return None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        return None
    return (state["config"], bool(state["epoch_complete"])) if state.get("config") else None


def check_resume_config(cfg: Any, resume: str = "", resumed: tuple[str, dict] | None = None) -> str:
    """Compare ``cfg`` with the config of the checkpoint this run would resume (``resume``, else with
    TRAIN.AUTO_RESUME the newest loadable one in OUTPUT). ``resumed``: that checkpoint as (path, state) the checks
    before already read it (``wiring.check_weight_files``), not parsed again.

    Returns "" when nothing that defines the run changed, else (TRAIN.ALLOW_CONFIG_CHANGE on) a warning that
    lists the changes.

    Raises:
        ConfigError: keys that define the run differ and TRAIN.ALLOW_CONFIG_CHANGE is off; or SEED differs from
            a mid-epoch checkpoint's (its data position belongs to the old seed's order) even with it on.
    """
    if resumed is not None:
        candidates = [resumed[0]]
    elif resume:
        candidates = [resume]
    elif cfg.TRAIN.AUTO_RESUME:
        candidates = Checkpointer(cfg.OUTPUT, writer=False).candidates()
    else:
        return ""
    for path in candidates:
        saved = saved_config(path, resumed[1] if resumed is not None else None)
        if saved is not None:
            break
    else:
        return ""
    saved_yaml, epoch_complete = saved
    changes = config_differences(saved_yaml, cfg.dump())
    if not changes:
        return ""
    listed = "; ".join(changes)
    if cfg.TRAIN.ALLOW_CONFIG_CHANGE and not epoch_complete and any(c.startswith("SEED ") for c in changes):
        raise ConfigError(f"checkpoint {path} was saved mid-epoch, at a place in the data order of its SEED: SEED "
                          "can only change from an epoch checkpoint (--resume one of the ckpt_epoch_*.pth files)")
    if cfg.TRAIN.ALLOW_CONFIG_CHANGE:
        return f"resuming {path} with keys that define the run changed (TRAIN.ALLOW_CONFIG_CHANGE): {listed}"
    # With --resume, another OUTPUT would meet the same file: a new run drops the flag instead
    where, new_run = (("--resume names", f"drop --resume (--pretrained {path} starts from its weights)") if resume
                      else (f"OUTPUT = {cfg.OUTPUT} holds",
                            f"choose another OUTPUT, or start over in this one with --opts TRAIN.AUTO_RESUME False "
                            f"(the earlier run's files move to {os.path.join(cfg.OUTPUT, EARLIER_RUNS_DIR)})"))
    raise ConfigError(f"{where} checkpoint {path} of a run with another config; these keys define the run and "
                      f"differ (saved -> now): {listed}. To continue that run, drop the changes; to continue it "
                      f"with them on purpose, add --opts TRAIN.ALLOW_CONFIG_CHANGE True; to start a new run, {new_run}")
