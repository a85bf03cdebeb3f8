"""The state of a run's live objects that a checkpoint carries: the model, optimizer and LR schedule put back
from it (:func:`restore_training_objects`), and each process's random number generators, captured for a save
(:func:`capture_rng`) and restored on resume (:func:`restore_rng`)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from evautil.errors import CheckpointError
from evautil.progress import counted

from .checkpoint_io import check_same_model

__all__ = ["restore_training_objects", "capture_rng", "restore_rng"]


def restore_training_objects(ckpt: dict, path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             scheduler: Any, keep_new_hyperparameters: bool = False,
                             keep_new_schedule: bool = False) -> None:
    """Load the model, optimizer and LR schedule of a training checkpoint.

    The optimizer's moments always come from the checkpoint; its hyperparameters (LR, weight decay, betas) and the
    schedule too, unless ``keep_new_hyperparameters`` (a changed config accepted on purpose) keeps this run's.
    ``keep_new_schedule`` keeps this run's schedule only: it counts optimizer steps, and the saved one counted
    another number of steps per epoch (another world size, batch size or list length).

    Raises:
        CheckpointError: the checkpoint holds another model (named with the differing shapes) or an optimizer
            state of other parameter groups.
    """
    check_same_model(model, ckpt, path)
    model.load_state_dict(ckpt["model"])
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except ValueError as e:  # another number or size of parameter groups: said with the keys that make them
        raise CheckpointError(
            f"checkpoint {path}: its optimizer state does not fit this run's parameter groups ({e}), which "
            "TRAIN.LAYER_WISE_DECAY (1.0, or below it) and MODEL.STOP_GRAD_CONV1 decide: set them back to the "
            f"checkpoint's, or start a new run from its weights (--pretrained {path}, no --resume, another OUTPUT)"
        ) from None
    if keep_new_hyperparameters:
        for group, new in zip(optimizer.param_groups, fresh):
            group.update(new)
    _keep_this_runs_implementation(optimizer, fresh)
    if not (keep_new_hyperparameters or keep_new_schedule):
        scheduler.load_state_dict(ckpt["scheduler"])


# Optimizer group keys that choose how the update is computed (kernels), not what it computes.
_IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


def _keep_this_runs_implementation(optimizer: torch.optim.Optimizer, fresh: list[dict]) -> None:
    """Give the optimizer back this run's kernels after ``load_state_dict``, which takes the saved groups' flags: a
    checkpoint written on the CPU (unfused) would otherwise resume unfused on a GPU, and one written fused on a GPU
    would ask for the fused kernel on the CPU. A fused or capturable update keeps its step counts as float32 on the
    parameters' device (torch's own rule on loading), the others leave them where they are."""
    for group, new in zip(optimizer.param_groups, fresh):
        for key in _IMPLEMENTATION_KEYS:
            if key in new:
                group[key] = new[key]
        on_device = group.get("fused") or group.get("capturable")
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if torch.is_tensor(step) and on_device:
                optimizer.state[p]["step"] = step.to(device=p.device, dtype=torch.float32)


def capture_rng() -> dict:
    """This process's python / numpy / torch (CPU and CUDA) RNG states as weights_only-loadable values."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> str:
    """Inverse of :func:`capture_rng`. Returns "" when every state was restored, else what was not and why: the
    CUDA states are per visible GPU, so a process that sees another number of GPUs than the one that saved them
    (another CUDA_VISIBLE_DEVICES, a CPU) cannot take them, and its GPU random draws do not continue exactly."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    saved = len(state["cuda"]) if "cuda" in state else 0
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if saved and saved == seen:
        torch.cuda.set_rng_state_all(state["cuda"])
    elif saved != seen:
        return (f"the CUDA random states were saved by a process that saw {counted(saved, 'GPU')} and this one "
                f"sees {counted(seen, 'GPU')}: they are not restored, so random draws on the GPU (drop path) do "
                "not continue exactly")
    return ""
