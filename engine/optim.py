"""AdamW with the original's parameter groups (no decay, layer-wise LR decay) and the per-step cosine schedule.

Original rules (SPEC section 4):
- no weight decay for 1-D parameters (biases, norms, q_bias/v_bias), names ending in ``.bias`` and the model's
  ``no_weight_decay()`` set (``pos_embed``, ``cls_token``);
- layer-wise LR decay: layer id 0 for the embeddings, ``blocks.k`` -> k + 1, everything else num_layers + 1;
  group scale ``decay ** (num_layers + 1 - layer_id)``, stored as ``lr_scale`` and applied by timm's scheduler;
- timm ``CosineLRScheduler`` stepped per optimizer step, warmup as a prefix, ``LR_MIN == 0`` meaning LR / 100.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import torch
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn

__all__ = ["param_groups_layer_decay", "build_param_groups", "build_optimizer", "build_scheduler",
           "resolve_lr_min"]

_log = logging.getLogger(__name__)


def _no_decay_names(model: nn.Module) -> set[str]:
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def param_groups_layer_decay(model: nn.Module, weight_decay: float, layer_decay: float,
                             no_weight_decay: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Parameter groups ``layer_{id}_{decay|no_decay}`` with ``lr_scale = layer_decay ** (max_id - id)``.

    The model supplies the layer ids through ``get_layer_id(name)`` and ``get_num_layers()`` (the original's
    assigner: ids 0 .. num_layers + 1). timm's own layer-decay helper derives ids from ``group_matcher``
    instead, which does not reproduce the original numbering, hence this small builder.
    """
    if not (hasattr(model, "get_layer_id") and hasattr(model, "get_num_layers")):
        raise TypeError(f"{type(model).__name__} has no get_layer_id()/get_num_layers(); "
                        "layer-wise LR decay needs them")
    skip = set(no_weight_decay) | _no_decay_names(model)
    max_id = model.get_num_layers() + 1
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(".bias") or name in skip
        layer_id = int(model.get_layer_id(name))
        key = f"layer_{layer_id}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            groups[key] = {"name": key, "params": [], "weight_decay": 0.0 if no_decay else weight_decay,
                           "lr_scale": layer_decay ** (max_id - layer_id), "layer_id": layer_id}
        groups[key]["params"].append(param)
    # Sort by layer id so that group 0 is the first layer and group -1 the head (lr_first / lr_last in logs).
    return sorted(groups.values(), key=lambda g: (g["layer_id"], g["weight_decay"] == 0.0))


def build_param_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]:
    """Layer-decay groups when ``layer_decay < 1``, else timm's two groups (decay / no decay, lr_scale 1)."""
    if layer_decay < 1.0:
        return param_groups_layer_decay(model, weight_decay, layer_decay)
    groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=sorted(_no_decay_names(model)))
    for g in groups:
        g["lr_scale"] = 1.0
        g["name"] = "no_decay" if g["weight_decay"] == 0.0 else "decay"
    return groups


def check_optimizer_available(train_cfg) -> None:
    """Raise ConfigError (one line, exit code 2) when TRAIN.FUSED_OPTIMIZER names an optimizer this machine lacks:
    called before a run indexes its lists (and by --dry-run), not only when the optimizer is built after them."""
    if train_cfg.FUSED_OPTIMIZER == "apex":
        try:
            from apex.optimizers import FusedAdam  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            from configs import ConfigError

            raise ConfigError("TRAIN.FUSED_OPTIMIZER = 'apex' but apex is not installed; use 'auto' or "
                              "'torch'") from None


def build_optimizer(train_cfg, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over :func:`build_param_groups` from the ``TRAIN`` config node.

    ``TRAIN.FUSED_OPTIMIZER``: "auto" uses torch's fused kernel on CUDA and the plain loop on the CPU; "apex"
    uses apex FusedAdam (AdamW mode) and fails clearly when apex is missing.
    """
    groups = build_param_groups(model, train_cfg.WEIGHT_DECAY, train_cfg.LAYER_WISE_DECAY)
    kwargs = dict(lr=train_cfg.LR, betas=tuple(train_cfg.BETAS), eps=train_cfg.EPS, weight_decay=train_cfg.WEIGHT_DECAY)
    impl = train_cfg.FUSED_OPTIMIZER
    if impl == "apex":
        check_optimizer_available(train_cfg)
        from apex.optimizers import FusedAdam  # type: ignore[import-not-found]

        return FusedAdam(groups, adam_w_mode=True, **kwargs)
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, fused=fused, **kwargs)


def resolve_lr_min(lr: float, lr_min: float) -> float:
    """The original's rule: LR_MIN 0 means LR / 100."""
    return lr_min if lr_min > 0 else lr / 100.0


def _whole_steps(epochs: float, steps_per_epoch: int) -> int:
    """The whole optimizer steps in ``epochs`` epochs, a fraction of a step cut off. The product is rounded first:
    in binary floating point 2.3 x 100 is 229.99999999999997, which ``int`` alone cut to 229 steps, not 230."""
    return int(round(epochs * steps_per_epoch, 6))


def build_scheduler(train_cfg, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> CosineLRScheduler:
    """timm cosine schedule over optimizer steps: warmup ``int(WARMUP_EPOCHS * n_iter)`` steps from WARMUP_START_LR,
    then cosine from LR to LR_MIN over the rest of the run's ``EPOCHS * n_iter`` steps (the original's
    ``(EPOCHS - WARMUP_EPOCHS) * n_iter``, which cut to whole steps ends a step early after a fractional warmup).

    The caller sets the LR for step ``t`` (0-based count of optimizer steps already taken) with
    ``scheduler.step_update(t)`` *before* ``optimizer.step()``, so step 0 runs at WARMUP_START_LR and the run is
    exactly resumable from the step count. (The original called it after the step with the same ``t``, so its
    first two steps shared one LR.)
    """
    warmup_t = _whole_steps(train_cfg.WARMUP_EPOCHS, steps_per_epoch)
    total_t = _whole_steps(train_cfg.EPOCHS, steps_per_epoch)
    # timm asserts t_initial > 0; an all-warmup run simply holds LR_MIN after the warmup.
    t_initial = max(1, total_t - warmup_t)
    # timm warns that a cosine of t_initial 1 "will have no effect": that is the schedule asked for here (a run
    # with one step after its warmup takes it at LR, an all-warmup one has none), so that warning alone is dropped.
    quiet = _DropMessage("Cosine annealing scheduler will have no effect") if t_initial == 1 else None
    timm_log = logging.getLogger(CosineLRScheduler.__module__)
    if quiet is not None:
        timm_log.addFilter(quiet)
    try:
        return CosineLRScheduler(
            optimizer, t_initial=t_initial, lr_min=resolve_lr_min(train_cfg.LR, train_cfg.LR_MIN),
            warmup_lr_init=train_cfg.WARMUP_START_LR, warmup_t=warmup_t, warmup_prefix=True, cycle_limit=1,
            t_in_epochs=False)
    finally:
        if quiet is not None:
            timm_log.removeFilter(quiet)


class _DropMessage(logging.Filter):
    """Drops the records whose message starts with ``start``."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)
