"""TRAIN.PRECISION on a device: the autocast dtype and whether a loss scaler is needed (training, evaluation and the
tools that run the model), and the name of a dtype for the run's lines."""

from __future__ import annotations

import torch

from configs import ConfigError

__all__ = ["resolve_precision", "precision_name"]


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether a GradScaler is needed) for TRAIN.PRECISION on ``device``.

    Raises:
        ConfigError: fp16 on a CPU (no loss scaler there; CPU fp16 autocast is also slow): use bf16 or fp32.
    """
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"TRAIN.PRECISION = 'fp16' needs a CUDA device (loss scaling); this run is on "
                          f"{device.type}: use 'bf16', 'fp32' or 'auto'")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16":
        return torch.bfloat16, False
    if precision == "fp16":
        return torch.float16, True
    return None, False


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """'bf16', 'fp16' or 'fp32' for the autocast dtype :func:`resolve_precision` returned."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, "fp32")
