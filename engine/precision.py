"""TRAIN.PRECISION on a device: the autocast dtype and whether a loss scaler is needed (training, evaluation and the
tools that run the model), what ``auto`` chose and why, and the name of a dtype for the run's lines."""

from __future__ import annotations

import inspect

import torch

from configs import ConfigError

__all__ = ["resolve_precision", "precision_name", "chosen_precision", "native_bf16", "emulated_bf16_warning"]


def native_bf16(device: torch.device) -> bool:
    """Whether CUDA ``device`` computes bf16 in hardware (Ampere, compute capability 8.0, and later). Older GPUs (V100,
    T4) run bf16 emulated, far slower than fp16. torch's check reads the current GPU, which every run sets to its
    own (``distributed.init_from_env``); where that check has no ``including_emulation`` (it may count emulation as
    support), the capability decides."""
    check = torch.cuda.is_bf16_supported
    if "including_emulation" in inspect.signature(check).parameters:
        return bool(check(including_emulation=False))
    return tuple(torch.cuda.get_device_capability(device)) >= (8, 0)


def _gpu(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"


def chosen_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """('bf16', 'fp16' or 'fp32': what TRAIN.PRECISION ``precision`` runs as on ``device``, why) for the run's
    start-up line. ``auto``: bf16 on a GPU that computes it natively, else fp16 with its loss scaler (as the
    original's apex O1); fp32 on a CPU."""
    if precision != "auto":
        return precision, f"TRAIN.PRECISION {precision}"
    if device.type != "cuda":
        return "fp32", "TRAIN.PRECISION auto on a CPU"
    if native_bf16(device):
        return "bf16", f"TRAIN.PRECISION auto: {_gpu(device)} computes bf16 natively"
    return "fp16", (f"TRAIN.PRECISION auto: {_gpu(device)} has no native bf16, so fp16 with a loss scaler, as the "
                    "original's apex O1")


def emulated_bf16_warning(precision: str, device: torch.device) -> str:
    """The warning for TRAIN.PRECISION bf16 set on a GPU without native bf16 ("" otherwise): the run goes on,
    slowly."""
    if precision != "bf16" or device.type != "cuda" or native_bf16(device):
        return ""
    return (f"TRAIN.PRECISION bf16 on {_gpu(device)}, which has no native bf16: it is emulated and runs far slower "
            "than fp16; set TRAIN.PRECISION auto or fp16 (with a loss scaler, as the original's apex O1)")


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether a GradScaler is needed) for TRAIN.PRECISION on ``device``
    (:func:`chosen_precision`).

    Raises:
        ConfigError: fp16 on a CPU (no loss scaler there; CPU fp16 autocast is also slow): use bf16 or fp32.
    """
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"TRAIN.PRECISION = 'fp16' needs a CUDA device (loss scaling); this run is on "
                          f"{device.type}: use 'bf16', 'fp32' or 'auto'")
    name, _ = chosen_precision(precision, device)
    return {"bf16": (torch.bfloat16, False), "fp16": (torch.float16, True)}.get(name, (None, False))


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """'bf16', 'fp16' or 'fp32' for the autocast dtype :func:`resolve_precision` returned."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, "fp32")
