"""Losses and batch blending: label smoothing, and Mixup / CutMix for video clips (SPEC section 3).

Mixup/CutMix as in the original ``CutmixMixupBlending``: one lambda and one partner permutation per per-GPU
batch, drawn from a generator keyed by ``(seed, step, rank)`` instead of the global RNGs, so a resumed run mixes
exactly as an uninterrupted one (the data loader keys its draws the same way, by seed and position).

Partners (``AUG.MIXUP_PARTNERS``):
- ``'random'`` (default, the original's rule): clip i is mixed with ``x[perm[i]]`` for a uniformly random
  permutation, so a clip can be its own partner. At the Kinetics-722 recipe's per-GPU batch of 2 half of the
  mix events are the identity and change nothing.
- ``'derangement'``: a random cyclic permutation, so no clip is ever mixed with itself (B > 1); at batch 2 this
  roughly doubles the effective mixing compared with the original.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

__all__ = ["build_criterion", "VideoMixup", "mixing_blends_nothing", "smooth_one_hot", "cutmix_box", "mix_partners",
           "PARTNER_RULES"]

PARTNER_RULES = ("random", "derangement")


def build_criterion(label_smoothing: float, mixup_active: bool) -> nn.Module:
    """SoftTargetCrossEntropy with mixing (targets carry the smoothing), else label smoothing, else plain CE."""
    if mixup_active:
        return SoftTargetCrossEntropy()
    if label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=label_smoothing)
    return nn.CrossEntropyLoss()


def mixing_blends_nothing(mixup_alpha: float, cutmix_alpha: float, batch_size: int) -> str:
    """Why Mixup/CutMix, though on, would blend nothing in training ("" when they blend): partners come from the
    clip's own per-GPU micro-batch, so at TRAIN.BATCH_SIZE 1 every clip is its own partner, whatever the rule."""
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or batch_size > 1:
        return ""
    return (f"AUG.MIXUP {mixup_alpha} / AUG.CUTMIX {cutmix_alpha} blend nothing at TRAIN.BATCH_SIZE {batch_size}: "
            "a clip is mixed with one of its own micro-batch, so every clip is its own partner and the run trains "
            "as without them; raise TRAIN.BATCH_SIZE, or set AUG.MIXUP 0 and AUG.CUTMIX 0 to say so")


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with ``on = 1 - s + s/C`` and ``off = s/C`` (float32, on the labels' device)."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32, device=labels.device)
    out.scatter_(1, labels.view(-1, 1).long(), 1.0 - smoothing + off)
    return out


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box ``int(H*sqrt(1-lam)) x int(W*sqrt(1-lam))`` centred at a uniform pixel, clipped to the frame.

    Returns ``(y0, y1, x0, x1)``.
    """
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, y1, x0, x1


def mix_partners(batch_size: int, rule: str, rng: np.random.Generator) -> np.ndarray:
    """The partner index of each clip: ``perm[i]`` is the clip that clip i is mixed with.

    ``'random'``: a uniform permutation (the original's ``randperm(B)``), the identity with probability 1/B!.
    ``'derangement'``: a uniformly random cyclic order, clip ``order[k]`` paired with ``order[k + 1]``; no fixed
    point when B > 1.
    """
    if rule == "random":
        return rng.permutation(batch_size).astype(np.int64)
    if rule == "derangement":
        order = rng.permutation(batch_size)
        perm = np.empty(batch_size, dtype=np.int64)
        perm[order] = np.roll(order, -1)
        return perm
    raise ValueError(f"AUG.MIXUP_PARTNERS = {rule!r} is not one of {', '.join(map(repr, PARTNER_RULES))}")


class VideoMixup:
    """Mixup or CutMix of a batch of clips ``(B, T, C, H, W)`` with soft, label-smoothed targets.

    Per call (one per micro-batch): with probability ``switch_prob`` (when both are enabled) CutMix with
    ``lam ~ Beta(cutmix_alpha, cutmix_alpha)``, otherwise Mixup with ``lam ~ Beta(mixup_alpha, mixup_alpha)``.
    CutMix pastes one box, the same in every frame of a clip, and recomputes ``lam`` from the box area.

    Args:
        mixup_alpha, cutmix_alpha: Beta parameters; 0 disables that mode.
        switch_prob: probability of CutMix when both modes are enabled.
        label_smoothing: smoothing of the one-hot targets before mixing.
        num_classes: width of the targets.
        seed: base seed; the draw for a call depends only on ``(seed, step, rank)``.
        partners: ``'random'`` (the original's ``randperm``) or ``'derangement'`` (never a clip with itself);
            see ``mix_partners``.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, switch_prob: float, label_smoothing: float,
                 num_classes: int, seed: int = 0, rank: int = 0, partners: str = "random") -> None:
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("VideoMixup needs mixup_alpha > 0 or cutmix_alpha > 0")
        if partners not in PARTNER_RULES:
            raise ValueError(f"AUG.MIXUP_PARTNERS = {partners!r} is not one of "
                             f"{', '.join(map(repr, PARTNER_RULES))}")
        self.partners = partners
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self.seed, self.rank = seed, rank

    def _rng(self, step: int) -> np.random.Generator:
        # Keyed like the loader's draws (seed masked to 32 bits, so any SEED works), plus a stream tag.
        return np.random.default_rng([int(self.seed) & 0xFFFFFFFF, int(step), int(self.rank), 0x4D49])

    @torch.no_grad()
    def __call__(self, video: torch.Tensor, labels: torch.Tensor, step: int
                 ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Blend ``video`` (B, T, C, H, W) and return ``(mixed video, soft targets (B, C) float32, info)``.

        ``step`` is the micro-batch counter of the run (use a different value for every call). ``info`` holds
        ``mode``, ``lam`` and the partner permutation, for tests and logs.
        """
        rng = self._rng(step)
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
        b = video.shape[0]
        perm = mix_partners(b, self.partners, rng)
        perm_t = torch.from_numpy(perm).to(video.device)
        partner = video.index_select(0, perm_t)
        if use_cutmix:
            lam = float(rng.beta(self.cutmix_alpha, self.cutmix_alpha))
            h, w = video.shape[-2:]
            y0, y1, x0, x1 = cutmix_box(h, w, lam, rng)
            mixed = video.clone()
            mixed[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        else:
            lam = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
            mixed = video * lam + partner * (1.0 - lam)
        y = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        targets = y * lam + y.index_select(0, perm_t) * (1.0 - lam)
        return mixed, targets, {"mode": "cutmix" if use_cutmix else "mixup", "lam": lam, "perm": perm}
