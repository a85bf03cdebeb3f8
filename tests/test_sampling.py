"""Frame sampling and augmentation draws: hand-computed indices, the original's formulas, determinism."""

import numpy as np
import pytest

from dali_pipelines import augment
from dali_pipelines.color_jitter import OP_GRAYSCALE
from dali_pipelines.sampling import (dense_indices, dense_multiview_indices, multiview_indices, sample_rng,
                                     segment_indices)


class _FixedJitter:
    """A generator stand-in whose integers() returns a fixed value, to hand-check the TSN formula."""

    def __init__(self, value):
        self.value = value

    def integers(self, low, high, size=None):
        assert high > self.value
        return self.value if size is None else np.full(size, self.value)


def test_tsn_hand_computed():
    # n=100, T=8: avg=12; jitter 0 -> 0,12,..,84; jitter 11 -> 11,23,..,95 (frames 96..99 never used)
    assert segment_indices(100, 8, _FixedJitter(0)).tolist() == [0, 12, 24, 36, 48, 60, 72, 84]
    assert segment_indices(100, 8, _FixedJitter(11)).tolist() == [11, 23, 35, 47, 59, 71, 83, 95]


def test_tsn_random_within_segments():
    rng = np.random.default_rng(0)
    for n in (16, 17, 300, 301):
        idx = segment_indices(n, 16, rng)
        avg = n // 16
        assert idx.dtype == np.int64 and idx.shape == (16,)
        assert np.all(idx // avg == np.arange(16))  # one frame per segment of length avg
        assert idx.max() < avg * 16


def test_tsn_short_video_repeats_frames():
    # n < T: round(arange(T) * n / T) with numpy's half-to-even rounding, as the original's np.around
    assert segment_indices(5, 8, np.random.default_rng(0)).tolist() == [0, 1, 1, 2, 2, 3, 4, 4]
    assert segment_indices(1, 4, np.random.default_rng(0)).tolist() == [0, 0, 0, 0]
    assert segment_indices(3, 4, None).tolist() == [0, 1, 2, 2]  # 0, .75, 1.5, 2.25 -> 0, 1, 2, 2


def test_uniform_hand_computed():
    # n=100, T=4: segments of 25 -> centres 12, 37, 62, 87
    assert multiview_indices(100, 4, 1).tolist() == [[12, 37, 62, 87]]
    # two clips interleave: (i + 0.25)*25 and (i + 0.75)*25
    assert multiview_indices(100, 4, 2).tolist() == [[6, 31, 56, 81], [18, 43, 68, 93]]
    assert multiview_indices(3, 4, 1).tolist() == [[0, 1, 1, 2]]


@pytest.mark.parametrize("t", [1, 3, 8, 16, 32])
def test_one_clip_uniform_equals_original_test_mode(t):
    for n in range(1, 700):
        avg = n / float(t)  # the original's SampleFrames(test_mode=True) arithmetic
        original = (np.arange(t) * avg + avg / 2.0).astype(int)
        assert multiview_indices(n, t, 1)[0].tolist() == original.tolist(), (n, t)
        # the original jitters several test clips only: one clip is in test mode whatever the sampling setting
        assert multiview_indices(n, t, 1, "random", sample_rng(1, 0, n))[0].tolist() == original.tolist(), (n, t)
    assert dense_multiview_indices(100, 8, 4, 1, "random", sample_rng(1, 0, 0)).tolist() == \
        dense_multiview_indices(100, 8, 4, 1, "uniform").tolist()


def test_random_multiview_is_independent_train_samplings():
    a = multiview_indices(300, 8, 3, "random", sample_rng(1, 0, 5))
    rng = sample_rng(1, 0, 5)
    b = np.stack([segment_indices(300, 8, rng) for _ in range(3)])
    assert a.shape == (3, 8) and np.array_equal(a, b)
    assert not np.array_equal(a[0], a[1])
    with pytest.raises(ValueError, match="rng"):
        multiview_indices(300, 8, 3, "random")
    with pytest.raises(ValueError, match="mode"):
        multiview_indices(300, 8, 3, "centre")


def test_dense():
    idx = dense_indices(100, 8, 4, _FixedJitter(10))
    assert idx.tolist() == [10, 14, 18, 22, 26, 30, 34, 38]
    short = dense_indices(10, 8, 4, np.random.default_rng(0))  # span 29 > 10: start 0, clamped
    assert short.tolist() == [0, 4, 8, 9, 9, 9, 9, 9]
    mv = dense_multiview_indices(100, 4, 2, 3)  # span 7, room 93: starts 0, 46, 93
    assert mv[:, 0].tolist() == [0, 46, 93] and mv[2].tolist() == [93, 95, 97, 99]
    assert dense_multiview_indices(100, 4, 2, 1)[0, 0] == 46


def test_same_key_same_clip_and_aug():
    def draw(seed, epoch, row):
        rng = sample_rng(seed, epoch, row)
        idx = segment_indices(250, 16, rng)
        a = augment.draw_train_aug(rng, 340, 256, 224, 16)
        return idx, a

    i1, a1 = draw(3, 2, 17)
    i2, a2 = draw(3, 2, 17)
    assert np.array_equal(i1, i2) and np.array_equal(a1.roi_start, a2.roi_start) and a1.mirror == a2.mirror
    assert float(a1.brightness) == float(a2.brightness) and float(a1.hue) == float(a2.hue)
    others = [draw(3, 3, 17)[0], draw(3, 2, 18)[0], draw(4, 2, 17)[0]]
    assert all(not np.array_equal(i1, o) for o in others)


def test_multiscale_crop_candidates():
    # 340x256 -> short side 256 -> 340x256 frame; crop sides int(256*s) = 256, 224, 192, 168 (snap 3 px to 224)
    res = augment.resized_size(340, 256, augment.short_side_for(224))
    assert res == (340, 256)
    sizes, offsets = set(), {}
    rng = np.random.default_rng(0)
    for _ in range(3000):
        x0, y0, w, h = augment.multiscale_crop(rng, 340, 256, 224)
        sizes.add((w, h))
        offsets.setdefault((w, h), set()).add((x0, y0))
        assert x0 + w <= 340 and y0 + h <= 256
    sides = [256, 224, 192, 168]
    expected = {(sides[j], sides[i]) for i in range(4) for j in range(4) if abs(i - j) <= 1}
    assert sizes == expected and len(sizes) == 10
    ws, hs = (340 - 192) // 4, (256 - 168) // 4  # (192, 168): the 5 fixed offsets, 4 corners + centre
    assert offsets[(192, 168)] == {(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)}


def test_roi_maps_to_source_pixels():
    # 680x512 source resized to 340x256 (factor 0.5): window (10, 20, 224, 224) -> source (20,40)-(468,488) [x,y]
    start, end = augment.roi_in_source((10, 20, 224, 224), 680, 512, 340, 256)
    assert start.tolist() == [40.0, 20.0] and end.tolist() == [488.0, 468.0]


def test_aug_draws_and_grayscale():
    n = 4000
    flips = grays = jit = 0
    for k in range(n):
        a = augment.draw_train_aug(np.random.default_rng(k), 96, 72, 32, 4)
        flips += a.mirror
        grays += int(a.color_ops[-1] == OP_GRAYSCALE)
        jit += float(a.brightness) != 1.0
        assert 0.6 <= float(a.brightness) <= 1.4 and -36.0 <= float(a.hue) <= 36.0
    assert abs(flips / n - 0.5) < 0.04 and abs(grays / n - 0.2) < 0.03 and abs(jit / n - 0.8) < 0.03
    pf = augment.draw_train_aug(np.random.default_rng(0), 96, 72, 32, 4, jitter_prob=1.0, per_frame_jitter=True)
    assert pf.brightness.shape == (4,) and len(set(pf.brightness.tolist())) == 4


def test_test_view_rois():
    # 3 crops of a 340x256 source at S=224: short side 224 -> 298x224; step (298-224)//2 = 37
    rois = augment.test_view_rois(340, 256, 224, 3)
    scale = 298 / 340
    xs = [round(float(s[1]) * scale, 3) for s, _ in rois]
    assert xs == [0.0, 37.0, 74.0]
    # portrait: windows move along y
    rois = augment.test_view_rois(256, 340, 224, 3)
    assert [float(s[1]) for s, _ in rois] == [0.0, 0.0, 0.0] and float(rois[2][0][0]) > float(rois[1][0][0]) > 0
    (start, end), = augment.test_view_rois(340, 256, 224, 1)  # 1 crop: 256 short side, centre 224
    assert np.allclose(start, [16, 58]) and np.allclose(end, [240, 282])
