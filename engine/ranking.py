"""The top-k classes of a score tensor, ties ranked toward the lower class index, for evaluation and prediction."""

from __future__ import annotations

import torch

__all__ = ["top_classes"]


def top_classes(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, indices)`` of the ``k`` highest scores along the last dimension, highest first; classes with equal
    scores in ascending class order. ``torch.topk`` orders ties arbitrarily (all-equal scores gave 4, 7, 6, 5, 2),
    so that evaluation and prediction could list the same scores differently. Runs where ``scores`` are, without a
    copy to the host."""
    values, indices = torch.sort(scores, dim=-1, descending=True, stable=True)  # stable: ties keep index order
    return values[..., :k], indices[..., :k]
