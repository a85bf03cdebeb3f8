"""Analytic FLOP counts of the EVA video transformer, for throughput and MFU reporting.

FLOPs here are 2 x multiply-accumulates of the matmuls and convolutions (patch embedding, qkv, q·kᵀ, attention·v,
output projection, MLP, head). Norms, softmax, GELU, biases and residual adds are left out (well under 1%).
For eva-1b/14 on a 16 x 224² clip this gives 12.06 TFLOPs per clip forward.

A training step costs about 3x the forward (backward = 2x: gradients w.r.t. activations and weights). With
gradient checkpointing every block's forward runs once more in the backward pass, so the hardware executes
about 4x; MFU conventionally uses the 3x "model FLOPs" (``train_step_flops(..., recompute=False)``).
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from torch import nn

from evautil import flops as flops_convention

from .eva import EVAVideoTransformer

__all__ = ["forward_flops", "train_step_flops"]


def _geometry(model_or_kwargs: nn.Module | Mapping[str, Any]) -> dict[str, Any]:
    """The sizes the count needs, from a model or from constructor kwargs (defaults filled from the signature)."""
    if isinstance(model_or_kwargs, nn.Module):
        m = model_or_kwargs
        return dict(img_size=m.img_size, num_frames=m.num_frames, patch_size=m.patch_size,
                    tubelet_size=m.tubelet_size, in_chans=m.in_chans, num_classes=m.num_classes,
                    embed_dim=m.embed_dim, depth=m.depth, mlp_hidden_dim=m.mlp_hidden_dim)
    params = inspect.signature(EVAVideoTransformer.__init__).parameters
    geo = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    kwargs = dict(model_or_kwargs)
    if "mlp_hidden" in kwargs:  # the factory presets' name for the MLP width
        kwargs["mlp_hidden_dim"] = kwargs.pop("mlp_hidden")
    unknown = set(kwargs) - set(geo)
    if unknown:
        raise ValueError(f"forward_flops: unknown model arguments {sorted(unknown)}")
    geo.update(kwargs)
    if geo["mlp_hidden_dim"] is None:
        geo["mlp_hidden_dim"] = int(geo["embed_dim"] * geo["mlp_ratio"])
    return geo


def forward_flops(model_or_kwargs: nn.Module | Mapping[str, Any]) -> float:
    """FLOPs (2 x MACs) of one clip's forward pass through ``EVAVideoTransformer``.

    Args:
        model_or_kwargs: a model, or its constructor kwargs (``mlp_hidden`` accepted for the MLP width).

    Multiply by the batch size for a batch, by ~3 for a training step (see ``train_step_flops``).
    """
    g = _geometry(model_or_kwargs)
    grid = g["img_size"] // g["patch_size"]
    n_patch = (g["num_frames"] // g["tubelet_size"]) * grid * grid
    n_tok = n_patch + 1  # + cls token
    d, hidden = g["embed_dim"], g["mlp_hidden_dim"]

    patch_embed = 2 * n_patch * d * (g["in_chans"] * g["tubelet_size"] * g["patch_size"] ** 2)
    per_block = (
        2 * n_tok * d * 3 * d  # qkv projection
        + 2 * n_tok * n_tok * d  # q·kᵀ over all heads (heads x head_dim = d)
        + 2 * n_tok * n_tok * d  # attention · v
        + 2 * n_tok * d * d  # output projection
        + 2 * 2 * n_tok * d * hidden  # MLP fc1 + fc2
    )
    head = 2 * d * g["num_classes"]
    return float(patch_embed + g["depth"] * per_block + head)


def train_step_flops(model_or_kwargs: nn.Module | Mapping[str, Any], recompute: bool = False) -> float:
    """FLOPs of one clip's training step (evautil.flops: 3x forward, 4x when gradient checkpointing recomputes)."""
    return flops_convention.train_step_flops(forward_flops(model_or_kwargs), recompute)
