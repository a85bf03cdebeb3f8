"""Label smoothing, video Mixup / CutMix (one box for all frames, soft targets) and the criterion choice."""

from __future__ import annotations

import itertools
import math
from collections import Counter

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
    boxes = 0
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
            boxes += 1
        else:
            area = 0
        outside = torch.ones(16, 20, dtype=torch.bool)
        if area:
            outside[y0:y1, x0:x1] = False
        assert torch.equal(out[..., outside], x[..., outside])
        assert info["lam"] == pytest.approx(1 - area / (16 * 20))
        expect = info["lam"] * smooth_one_hot(y, 5, 0.1) + (1 - info["lam"]) * smooth_one_hot(y[perm], 5, 0.1)
        assert torch.allclose(target, expect) and torch.allclose(target.sum(1), torch.ones(6))
    # A box shows unless lam ~ Beta(1, 1) lands within 1/256 of 1 or the partners are all the clips themselves:
    # nearly every step must paste one (a CutMix that pastes nothing would pass every check above).
    assert boxes >= 18


def test_mixup_blend_targets():
    x, y = _clips()
    for partners in ("random", "derangement"):
        mix = VideoMixup(0.8, 0.0, 0.5, 0.0, 5, seed=0, partners=partners)
        out, target, info = mix(x, y, step=7)
        lam, perm = info["lam"], torch.from_numpy(info["perm"])
        assert info["mode"] == "mixup" and 0.0 < lam < 1.0
        assert not torch.equal(out, x)  # the blend changed the clips (this seed draws no identity permutation)
        assert torch.allclose(out, lam * x + (1 - lam) * x[perm], atol=1e-6)
        assert sorted(perm.tolist()) == list(range(6))
        assert torch.allclose(target, lam * torch.eye(5)[y] + (1 - lam) * torch.eye(5)[y[perm]])


def _partner_counts(partners: str, batch: int, draws: int) -> Counter:
    x, y = _clips(b=batch, t=1, h=2, w=2)
    mix = VideoMixup(0.8, 1.0, 0.5, 0.1, 5, seed=4, partners=partners)
    return Counter(tuple(mix(x, y, step=s)[2]["perm"].tolist()) for s in range(draws))


@pytest.mark.parametrize("batch", [2, 3, 4])
def test_random_partners_are_the_originals_uniform_permutation(batch):
    # The original pairs clip i with x[randperm(B)][i]: every one of the B! permutations, the identity included,
    # with probability 1/B!. 1500 draws: each count is Binomial(1500, 1/B!); 5 standard deviations either side.
    draws = 1500
    counts = _partner_counts("random", batch, draws)
    assert set(counts) == set(itertools.permutations(range(batch)))  # every permutation occurs
    p = 1 / math.factorial(batch)
    sd = math.sqrt(draws * p * (1 - p))
    for perm, n in counts.items():
        assert abs(n - draws * p) < 5 * sd, (perm, n, draws * p)
    identity = tuple(range(batch))
    assert abs(counts[identity] - draws * p) < 5 * sd


def test_random_partner_identity_leaves_the_batch_unchanged():
    # At batch 2 half of the mix events pair each clip with itself: the clip and its targets come back as they were
    # (the original's no-op events).
    x, y = _clips(b=2)
    mix = VideoMixup(0.8, 1.0, 0.5, 0.1, 5, seed=4)
    identity_steps = [s for s in range(40) if mix(x, y, step=s)[2]["perm"].tolist() == [0, 1]]
    assert 5 < len(identity_steps) < 35
    for s in identity_steps:
        out, target, _ = mix(x, y, step=s)
        assert torch.allclose(out, x, atol=1e-6) and torch.allclose(target, smooth_one_hot(y, 5, 0.1))


@pytest.mark.parametrize("batch", [2, 3, 5])
def test_derangement_option_never_pairs_a_clip_with_itself(batch):
    counts = _partner_counts("derangement", batch, 600)
    for perm in counts:
        assert sorted(perm) == list(range(batch)) and all(p != i for i, p in enumerate(perm))
    # Every cyclic order occurs ((B-1)! of them); at B = 2 that is the swap, always.
    assert len(counts) == math.factorial(batch - 1)


def test_partner_rule_is_checked():
    with pytest.raises(ValueError, match="AUG.MIXUP_PARTNERS = 'shuffle'"):
        VideoMixup(0.8, 1.0, 0.5, 0.1, 5, partners="shuffle")


def test_resumed_mixup_repeats_the_uninterrupted_run():
    # A run stopped after step 9 and resumed builds a new VideoMixup; from step 10 on it must mix exactly as the
    # uninterrupted run did, whatever the global RNGs did in between.
    x, y = _clips()
    for partners in ("random", "derangement"):
        torch.manual_seed(0)
        uninterrupted = VideoMixup(0.8, 1.0, 0.5, 0.1, 5, seed=1024, rank=1, partners=partners)
        full = [uninterrupted(x, y, step=s) for s in range(20)]
        torch.manual_seed(12345)
        _ = torch.rand(100)
        resumed = VideoMixup(0.8, 1.0, 0.5, 0.1, 5, seed=1024, rank=1, partners=partners)
        for s in range(10, 20):
            out, target, info = resumed(x, y, step=s)
            assert torch.equal(out, full[s][0]) and torch.equal(target, full[s][1])
            assert info["perm"].tolist() == full[s][2]["perm"].tolist() and info["lam"] == full[s][2]["lam"]
        # Another rank mixes differently at the same steps.
        other = VideoMixup(0.8, 1.0, 0.5, 0.1, 5, seed=1024, rank=0, partners=partners)
        assert any(not torch.equal(other(x, y, step=s)[0], full[s][0]) for s in range(10))


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
