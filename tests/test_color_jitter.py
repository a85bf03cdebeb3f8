"""Colour jitter in the DALI graph against torchvision's functional ops: the four operations in a given order,
contrast about the clip's mean grey, HSV hue, grayscale after the jitter, per-frame factors, and the per-clip
order drawn by the augmentation (CPU DALI; the same graph runs on the GPU, see the gpu-marked test)."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from nvidia.dali import fn, pipeline_def, types

from dali_pipelines import augment
from dali_pipelines.color_jitter import (OP_BRIGHTNESS, OP_CONTRAST, OP_GRAYSCALE, OP_HUE, OP_NONE, OP_SATURATION,
                                         jitter_frames, make_color_ops)
from dali_pipelines.pyav_io import decode_frames
from tests.video_fixtures import reference_clips

CLIP = "k400_arm_wrestling_340x256.mp4"


@pytest.fixture(scope="module")
def real_frames(real_clips_dir) -> np.ndarray:
    """4 frames spread over a real Kinetics clip, its central 128 x 170 pixels, uint8 (4, 128, 170, 3)."""
    path, = reference_clips(real_clips_dir, [CLIP])
    return np.ascontiguousarray(decode_frames(str(path), range(0, 64, 16))[:, 64:192, 85:255])


def run_jitter(clips, programs, factors, per_frame=False, device="cpu"):
    """Run ``jitter_frames`` once on a batch: clips uint8 FHWC, programs (5,) int32, factors dicts of b/c/s/h."""
    keys = ("brightness", "contrast", "saturation", "hue")
    columns = (list(clips), [np.asarray(p, np.int32) for p in programs],
               *([np.asarray(f[k], np.float32) for f in factors] for k in keys))
    fed = {"done": False}

    def source():
        if fed["done"]:
            raise StopIteration
        fed["done"] = True
        return columns

    @pipeline_def(enable_conditionals=True)
    def pipe():
        video, ops, b, c, s, h = fn.external_source(source=source, num_outputs=6, batch=True,
                                                    layout=["FHWC", "", "", "", "", ""])
        if device == "gpu":
            video = video.gpu()
        return jitter_frames(video, ops, b, c, s, h, per_frame=per_frame)

    p = pipe(batch_size=len(columns[0]), num_threads=1, device_id=0 if device == "gpu" else None)
    p.build()
    (out,) = p.run()
    if device == "gpu":
        out = out.as_cpu()
    return [np.array(out[i]) for i in range(len(columns[0]))]


def torchvision_reference(frames: np.ndarray, program, f: dict, per_frame: bool = False) -> np.ndarray:
    """torchvision.transforms.functional on float frames in [0, 1], op by op in the program's order.

    Contrast is torchvision's blend with the mean grey level, taken over the clip (our per-clip choice) or, per
    frame, over each frame (what torchvision does); every other operation is torchvision's own function.
    """
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).double() / 255.0  # (T, 3, H, W)
    t = x.shape[0]

    def factor(name, i):
        v = np.asarray(f[name], np.float64)
        return float(v[i]) if per_frame else float(v)

    for op in program:
        if op == OP_NONE:
            continue
        if op == OP_CONTRAST:
            grey = TF.rgb_to_grayscale(x)  # (T, 1, H, W)
            means = grey.mean(dim=(1, 2, 3), keepdim=True) if per_frame else grey.mean().expand(t, 1, 1, 1)
            c = torch.tensor([factor("contrast", i) for i in range(t)], dtype=x.dtype).view(t, 1, 1, 1)
            x = (c * x + (1 - c) * means).clamp(0, 1)
            continue
        frames_out = []
        for i in range(t):
            xi = x[i]
            if op == OP_BRIGHTNESS:
                xi = TF.adjust_brightness(xi, factor("brightness", i))
            elif op == OP_SATURATION:
                xi = TF.adjust_saturation(xi, factor("saturation", i))
            elif op == OP_HUE:
                xi = TF.adjust_hue(xi, factor("hue", i) / 360.0)
            elif op == OP_GRAYSCALE:
                xi = TF.rgb_to_grayscale(xi, num_output_channels=3)
            frames_out.append(xi)
        x = torch.stack(frames_out)
    return (x.permute(0, 2, 3, 1) * 255.0).float().numpy()


STRONG = {"brightness": 1.35, "contrast": 0.65, "saturation": 1.2, "hue": 30.0}
WEAK = {"brightness": 0.7, "contrast": 1.3, "saturation": 0.8, "hue": -25.0}
ORDERS = [(OP_BRIGHTNESS, OP_CONTRAST, OP_SATURATION, OP_HUE), (OP_HUE, OP_SATURATION, OP_CONTRAST, OP_BRIGHTNESS),
          (OP_SATURATION, OP_HUE, OP_BRIGHTNESS, OP_CONTRAST)]


def test_matches_torchvision_on_a_real_clip(real_frames):
    cases = [(order, factors, gray) for order in ORDERS for factors in (STRONG, WEAK) for gray in (False, True)]
    programs = [make_color_ops(np.array(order), True, gray) for order, _, gray in cases]
    outs = run_jitter([real_frames] * len(cases), programs, [f for _, f, _ in cases])
    for (order, factors, gray), program, out in zip(cases, programs, outs):
        ref = torchvision_reference(real_frames, program, factors)
        err = np.abs(out - ref)
        # Acceptance: within 2 grey levels on average; float arithmetic on both sides leaves far less.
        assert out.dtype == np.float32 and out.shape == real_frames.shape
        assert err.mean() < 0.01 and err.max() < 0.5, (order, factors, gray, err.mean(), err.max())
        if gray:
            assert np.abs(out[..., 0] - out[..., 2]).max() < 1e-3
    # The order matters on this clip, so the comparison above could tell orders apart.
    first, second = outs[0], outs[4]  # same factors, orders 0 and 1
    assert np.abs(first - second).mean() > 1.0


def _uint8_torchvision(frames: np.ndarray, program, f: dict) -> np.ndarray:
    """torchvision's functional ops on uint8 tensors (each result truncated to 8 bits, as torchvision does)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    for op in program:
        if op == OP_CONTRAST:  # torchvision's uint8 blend, about the clip's mean grey
            mean = TF.rgb_to_grayscale(x).float().mean()
            x = (f["contrast"] * x.float() + (1 - f["contrast"]) * mean).clamp(0, 255).to(torch.uint8)
        elif op == OP_BRIGHTNESS:
            x = TF.adjust_brightness(x, f["brightness"])
        elif op == OP_SATURATION:
            x = TF.adjust_saturation(x, f["saturation"])
        elif op == OP_HUE:
            x = TF.adjust_hue(x, f["hue"] / 360.0)
    return x.permute(0, 2, 3, 1).float().numpy()


def test_close_to_torchvision_on_8_bit_frames(real_frames):
    # torchvision on uint8 tensors truncates every intermediate result to 8 bits (the original's PIL rounded);
    # the graph keeps float between operations. The difference stays under 2 grey levels on average.
    cases = [(order, factors) for order in ORDERS for factors in (STRONG, WEAK)]
    programs = [make_color_ops(np.array(order), True, False) for order, _ in cases]
    outs = run_jitter([real_frames] * len(cases), programs, [f for _, f in cases])
    for (order, factors), program, out in zip(cases, programs, outs):
        err = np.abs(out - _uint8_torchvision(real_frames, program, factors)).mean()
        print(f"order {order} hue {factors['hue']:+.0f}: mean |DALI - torchvision uint8| = {err:.3f} grey levels")
        assert err < 2.0, (order, factors, err)


def test_the_old_fixed_order_twist_would_fail_the_comparison(real_frames):
    # DALI's color_twist (contrast about 128, YIQ hue, fixed order) on the same inputs: the check above is not one
    # that any colour jitter passes.
    program = make_color_ops(np.array(ORDERS[1]), True, False)
    ref = torchvision_reference(real_frames, program, STRONG)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def twist():
        video = fn.external_source(source=lambda: [real_frames], batch=True, layout="FHWC")
        return fn.color_twist(fn.cast(video, dtype=types.FLOAT), **STRONG)

    p = twist()
    p.build()
    (out,) = p.run()
    assert np.abs(np.array(out[0]) - ref).mean() > 5.0


def test_contrast_pivots_on_the_clips_mean_grey():
    # The example: a pixel at 200 with contrast 0.5 in a clip whose mean grey is 104 becomes 152
    # (DALI's color_twist, pivoting at 128, gives 164).
    clip = np.full((2, 4, 4, 3), 100, np.uint8)
    clip[0, 0, 0] = 200
    clip[1, 1, 1] = 128  # mean grey (30 * 100 + 200 + 128) / 32 = 104 (times torchvision's weight sum 0.9999)
    (out,) = run_jitter([clip], [[OP_CONTRAST, OP_NONE, OP_NONE, OP_NONE, OP_NONE]],
                        [{"brightness": 1.0, "contrast": 0.5, "saturation": 1.0, "hue": 0.0}])
    assert out[0, 0, 0].tolist() == pytest.approx([152.0] * 3, abs=0.01)
    assert out[0, 1, 1].tolist() == pytest.approx([102.0] * 3, abs=0.01)  # 0.5 * 100 + 0.5 * 104


def test_per_frame_factors_and_frame_means(real_frames):
    t = real_frames.shape[0]
    rng = np.random.default_rng(5)
    factors = {"brightness": rng.uniform(0.6, 1.4, t), "contrast": rng.uniform(0.6, 1.4, t),
               "saturation": rng.uniform(0.8, 1.2, t), "hue": rng.uniform(-36, 36, t)}
    program = make_color_ops(np.array(ORDERS[2]), True, False)
    (out,) = run_jitter([real_frames], [program], [factors], per_frame=True)
    ref = torchvision_reference(real_frames, program, factors, per_frame=True)
    assert np.abs(out - ref).mean() < 0.01
    # Frame means, not the clip's: the per-clip reference differs.
    clip_mean_ref = torchvision_reference(real_frames, program, {k: v.mean() for k, v in factors.items()})
    assert np.abs(out - clip_mean_ref).mean() > 1.0


def test_empty_program_leaves_the_clip_as_it_is(real_frames):
    (out,) = run_jitter([real_frames], [make_color_ops(np.arange(4), False, False)], [STRONG])
    np.testing.assert_array_equal(out, real_frames.astype(np.float32))


def test_empty_and_full_programs_in_one_batch(real_frames):
    """Clips without a colour operation skip the colour planes; in a batch with clips that have one, each clip
    still gets its own program."""
    full = make_color_ops(np.array([OP_HUE, OP_CONTRAST, OP_BRIGHTNESS, OP_SATURATION]), True, True)
    empty = make_color_ops(np.arange(4), False, False)
    outs = run_jitter([real_frames] * 3, [empty, full, empty], [STRONG] * 3)
    np.testing.assert_array_equal(outs[0], real_frames.astype(np.float32))
    np.testing.assert_array_equal(outs[2], real_frames.astype(np.float32))
    ref = torchvision_reference(real_frames, full, STRONG)
    assert np.abs(outs[1] - ref).mean() < 0.01 and np.abs(outs[1] - real_frames).mean() > 5


def test_hue_of_grey_and_saturated_pixels():
    # Greys stay grey, and pure colours move round the HSV circle: red +120 degrees is green, -120 is blue.
    clip = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [90, 90, 90], [255, 128, 0]]]], np.uint8)
    outs = run_jitter([clip] * 2, [[OP_HUE, -1, -1, -1, -1]] * 2,
                      [{"brightness": 1, "contrast": 1, "saturation": 1, "hue": h} for h in (120.0, -120.0)])
    np.testing.assert_allclose(outs[0][0, 0, :4], [[0, 255, 0], [0, 0, 255], [255, 0, 0], [90, 90, 90]], atol=1e-3)
    np.testing.assert_allclose(outs[1][0, 0, :3], [[0, 0, 255], [255, 0, 0], [0, 255, 0]], atol=1e-3)
    ref = torchvision_reference(clip, [OP_HUE], {"hue": 120.0})
    np.testing.assert_allclose(outs[0], ref, atol=1e-3)


def test_order_is_drawn_per_clip_and_varies():
    programs = [augment.draw_train_aug(np.random.default_rng(k), 96, 72, 32, 4, jitter_prob=1.0,
                                       gray_prob=0.0).color_ops for k in range(2400)]
    orders = Counter(tuple(int(o) for o in p[:4]) for p in programs)
    assert set(orders) == set(itertools.permutations(range(4)))  # all 24 orders occur ...
    assert max(orders.values()) < 2 * 2400 / 24  # ... about equally often
    assert all(p[4] == OP_NONE for p in programs)
    off = augment.draw_train_aug(np.random.default_rng(0), 96, 72, 32, 4, jitter_prob=0.0, gray_prob=1.0)
    assert off.color_ops.tolist() == [OP_NONE] * 4 + [OP_GRAYSCALE]
    assert float(off.brightness) == 1.0 and float(off.saturation) == 1.0


@pytest.mark.gpu
def test_gpu_graph_matches_the_cpu_graph(real_frames):
    programs = [make_color_ops(np.array(order), True, gray) for order in ORDERS for gray in (False, True)]
    factors = [STRONG, WEAK] * 3
    cpu = run_jitter([real_frames] * 6, programs, factors)
    gpu = run_jitter([real_frames] * 6, programs, factors, device="gpu")
    for a, b in zip(cpu, gpu):
        assert np.abs(a - b).mean() < 0.01
