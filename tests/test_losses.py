"""Label smoothing, video Mixup / CutMix (one box for all frames, soft targets) and the criterion choice."""

from __future__ import annotations

import pytest
import torch
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from engine.losses import VideoMixup, build_criterion, smooth_one_hot


def _clips(b=6, t=4, h=16, w=20):
    g = torch.Generator().manual_seed(0)
    # every clip, frame and pixel distinct so that any mixing is visible
    return torch.rand(b, t, 3, h, w, generator=g), torch.arange(b) % 5


def test_smooth_one_hot_values():
    y = smooth_one_hot(torch.tensor([2, 0]), 5, 0.1)
    assert y[0, 2] == pytest.approx(1 - 0.1 + 0.02) and y[0, 0] == pytest.approx(0.02)
    assert torch.allclose(y.sum(1), torch.ones(2))


def test_criterion_choice_and_equivalence():
    assert isinstance(build_criterion(0.1, True), SoftTargetCrossEntropy)
    assert isinstance(build_criterion(0.1, False), LabelSmoothingCrossEntropy)
    assert isinstance(build_criterion(0.0, False), torch.nn.CrossEntropyLoss)
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 1, 4])
    # label smoothing == soft-target CE on the smoothed one-hot (SPEC section 3)
    ls = build_criterion(0.1, False)(logits, labels)
    soft = build_criterion(0.1, True)(logits, smooth_one_hot(labels, 5, 0.1))
    manual = -(smooth_one_hot(labels, 5, 0.1) * logits.log_softmax(-1)).sum(-1).mean()
    assert ls.item() == pytest.approx(manual.item(), rel=1e-6)
    assert soft.item() == pytest.approx(manual.item(), rel=1e-6)


def test_cutmix_same_box_in_every_frame_and_lambda_from_area():
    x, y = _clips()
    mix = VideoMixup(0.0, 1.0, 0.5, 0.1, 5, seed=3)
    for step in range(20):
        out, target, info = mix(x, y, step=step)
        assert info["mode"] == "cutmix"
        perm = torch.from_numpy(info["perm"])
        inside = (out != x).any(dim=(0, 1, 2))  # (H, W) pixels changed anywhere
        if inside.any():
            rows, cols = inside.nonzero(as_tuple=True)
            y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            # a rectangle, identical in every frame and clip, filled from the partner clip
            assert inside[y0:y1, x0:x1].all()
            assert torch.equal(out[..., y0:y1, x0:x1], x[perm][..., y0:y1, x0:x1])
            area = int((y1 - y0) * (x1 - x0))
        else:
            area = 0
        outside = torch.ones(16, 20, dtype=torch.bool)
        if area:
            outside[y0:y1, x0:x1] = False
        assert torch.equal(out[..., outside], x[..., outside])
        assert info["lam"] == pytest.approx(1 - area / (16 * 20))
        expect = info["lam"] * smooth_one_hot(y, 5, 0.1) + (1 - info["lam"]) * smooth_one_hot(y[perm], 5, 0.1)
        assert torch.allclose(target, expect) and torch.allclose(target.sum(1), torch.ones(6))


def test_mixup_blend_targets_and_no_self_partner():
    x, y = _clips()
    mix = VideoMixup(0.8, 0.0, 0.5, 0.0, 5, seed=0)
    out, target, info = mix(x, y, step=7)
    lam, perm = info["lam"], torch.from_numpy(info["perm"])
    assert info["mode"] == "mixup" and 0.0 <= lam <= 1.0
    assert torch.allclose(out, lam * x + (1 - lam) * x[perm], atol=1e-6)
    assert (perm != torch.arange(6)).all()  # a derangement: no clip mixed with itself
    assert sorted(perm.tolist()) == list(range(6))
    assert torch.allclose(target, lam * torch.eye(5)[y] + (1 - lam) * torch.eye(5)[y[perm]])


def test_draws_keyed_by_seed_and_step_and_switch_prob():
    x, y = _clips()
    a = VideoMixup(0.8, 1.0, 0.5, 0.1, 5, seed=11)
    b = VideoMixup(0.8, 1.0, 0.5, 0.1, 5, seed=11)
    torch.manual_seed(123)  # global RNG state must not matter (resumable)
    o1, t1, i1 = a(x, y, step=5)
    torch.manual_seed(999)
    o2, t2, i2 = b(x, y, step=5)
    assert torch.equal(o1, o2) and torch.equal(t1, t2) and i1["lam"] == i2["lam"]
    o3, _, i3 = a(x, y, step=6)
    assert not torch.equal(o1, o3)
    modes = [a(x, y, step=s)[2]["mode"] for s in range(200)]
    assert 60 < modes.count("cutmix") < 140  # switch probability 0.5
    only_mixup = [VideoMixup(0.8, 1.0, 0.0, 0.1, 5)(x, y, step=s)[2]["mode"] for s in range(20)]
    assert set(only_mixup) == {"mixup"}
