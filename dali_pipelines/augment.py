"""Per-clip augmentation parameters and crop geometry, drawn in numpy (no DALI).

The DALI graph (``pipelines.py``) only *applies* what is drawn here: every random choice of a sample is made in
Python from the sample's own generator and fed to the graph as per-sample tensors. That makes a sample's
augmentation a pure function of (seed, epoch, row), which is what exact resume and worker-count independence need.

Geometry convention: crop windows are first computed exactly as the original does, in the pixel grid of the
short-side-resized frame, then mapped back to source-pixel coordinates so that a single ``fn.resize`` with a
region of interest does "resize, crop, resize" in one pass. With bilinear filtering and no antialiasing the output
pixel centres land on the same source positions as the two-step version, at a fraction of the cost (one pass over
T*S*S output pixels instead of two); the pixels differ slightly all the same (a little sharper), since the frame is
interpolated once instead of twice (README, differences from the original).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .color_jitter import make_color_ops

__all__ = [
    "MEAN", "STD", "resized_size", "short_side_for", "multiscale_crop", "roi_in_source", "TrainAug",
    "draw_train_aug", "center_crop_window", "three_crop_windows", "test_view_rois",
]

# The original's normalisation (ImageNet mean/std x 255, RGB).
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def short_side_for(input_size: int) -> int:
    """Short side before cropping in training and 1-crop test: ``int(S * 256 / 224)`` (256 for S = 224)."""
    return int(input_size * 256 / 224)


def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """Size (w, h) after resizing the short side to ``short`` keeping the aspect ratio (mmcv's rounding)."""
    scale = short / min(width, height)
    return int(width * scale + 0.5), int(height * scale + 0.5)


def multiscale_crop(rng: np.random.Generator, img_w: int, img_h: int, input_size: int,
                    scales=(1.0, 0.875, 0.75, 0.66), max_wh_scale_gap: int = 1) -> tuple[int, int, int, int]:
    """The original's ``MultiScaleCrop(random_crop=False, num_fixed_crops=5)`` on an ``img_w x img_h`` frame.

    Crop sides are ``int(base * s)`` with ``base = min(w, h)``; a (w, h) pair is drawn uniformly among pairs of
    scale indices at most ``max_wh_scale_gap`` apart; a side within 3 px of ``input_size`` snaps to it; the offset is
    drawn uniformly among the 5 fixed positions (corners and centre on a quarter-step grid).
    Returns (x0, y0, crop_w, crop_h) in the frame's pixels.
    """
    base = min(img_w, img_h)
    sizes = [int(base * s) for s in scales]
    pairs = [(w, h) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= max_wh_scale_gap]
    crop_w, crop_h = pairs[int(rng.integers(len(pairs)))]
    if abs(crop_w - input_size) < 3:
        crop_w = input_size
    if abs(crop_h - input_size) < 3:
        crop_h = input_size
    w_step, h_step = (img_w - crop_w) // 4, (img_h - crop_h) // 4
    offsets = [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step), (2 * w_step, 2 * h_step)]
    x0, y0 = offsets[int(rng.integers(len(offsets)))]
    return x0, y0, crop_w, crop_h


def roi_in_source(window: tuple[int, int, int, int], src_w: int, src_h: int,
                  res_w: int, res_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Map a window (x0, y0, w, h) of the ``res_w x res_h`` resized frame to source pixels.

    Returns ``roi_start, roi_end`` as float32 ``[y, x]`` (DALI's shape order for HWC frames).
    """
    x0, y0, w, h = window
    sx, sy = res_w / src_w, res_h / src_h
    start = np.array([y0 / sy, x0 / sx], dtype=np.float32)
    end = np.array([(y0 + h) / sy, (x0 + w) / sx], dtype=np.float32)
    return start, end


@dataclass
class TrainAug:
    """Augmentation of one training clip (all frames share it unless the jitter is per frame)."""

    roi_start: np.ndarray  # float32 [y, x] in source pixels
    roi_end: np.ndarray  # float32 [y, x]
    mirror: int  # 1: flip horizontally
    brightness: np.ndarray  # float32, () per clip or (T,) per frame; multiplicative, 1 = unchanged
    contrast: np.ndarray
    saturation: np.ndarray
    hue: np.ndarray  # degrees
    color_ops: np.ndarray  # int32 (5,): jitter operations in this clip's order, then grayscale (color_jitter.py)


def draw_train_aug(rng: np.random.Generator, src_w: int, src_h: int, input_size: int, num_frames: int, *,
                   scales=(1.0, 0.875, 0.75, 0.66), flip_prob: float = 0.5, jitter_prob: float = 0.8,
                   gray_prob: float = 0.2, per_frame_jitter: bool = False, brightness: float = 0.4,
                   contrast: float = 0.4, saturation: float = 0.2, hue: float = 0.1) -> TrainAug:
    """Draw one clip's augmentation; the draw order is fixed so the same generator state gives the same result.

    Colour jitter follows torchvision's ``ColorJitter(0.4, 0.4, 0.2, 0.1)``: factors uniform in ``[1-x, 1+x]``,
    hue shift uniform in ``[-0.1, 0.1]`` of the colour circle (converted to degrees), the four operations in a
    random order, applied with torchvision's semantics by ``color_jitter.jitter_frames``. ``per_frame_jitter``
    redraws the factors for every frame as the original did; the default keeps one set per clip (no flicker).
    The order is one per clip either way.
    """
    res_w, res_h = resized_size(src_w, src_h, short_side_for(input_size))
    window = multiscale_crop(rng, res_w, res_h, input_size, scales)
    roi_start, roi_end = roi_in_source(window, src_w, src_h, res_w, res_h)
    mirror = int(rng.random() < flip_prob)
    apply_jitter = rng.random() < jitter_prob
    n = num_frames if per_frame_jitter else 1
    # Always drawn, so later draws do not depend on whether the jitter fires.
    b = rng.uniform(1 - brightness, 1 + brightness, n)
    c = rng.uniform(1 - contrast, 1 + contrast, n)
    s = rng.uniform(1 - saturation, 1 + saturation, n)
    h = rng.uniform(-hue, hue, n) * 360.0
    gray = rng.random() < gray_prob
    order = rng.permutation(4)  # drawn last: the draws above are those of earlier versions
    if not apply_jitter:
        b, c, s, h = np.ones(n), np.ones(n), np.ones(n), np.zeros(n)
    # Grayscale runs after the jitter, as the original's GrayScale follows ColorJitter.
    color_ops = make_color_ops(order, apply_jitter, gray)

    def arr(x):
        x = np.asarray(x, dtype=np.float32)
        return x if per_frame_jitter else x.reshape(())

    return TrainAug(roi_start, roi_end, mirror, arr(b), arr(c), arr(s), arr(h), color_ops)


def center_crop_window(img_w: int, img_h: int, size: int) -> tuple[int, int, int, int]:
    """``CenterCrop(size)`` on a ``img_w x img_h`` frame: (x0, y0, size, size), offsets floored."""
    return (img_w - size) // 2, (img_h - size) // 2, size, size


def three_crop_windows(img_w: int, img_h: int, size: int) -> list[tuple[int, int, int, int]]:
    """Three ``size`` crops along the long side: left, centre, right (top, centre, bottom for portrait frames).

    Same windows as the original's ``ThreeCrop`` (step = (L - size) // 2; offsets 0, step, 2*step); the original
    emits them in the order left, right, centre, which does not matter for averaged scores.
    """
    if img_w >= img_h:
        step = (img_w - size) // 2
        return [(k * step, (img_h - size) // 2, size, size) for k in range(3)]
    step = (img_h - size) // 2
    return [((img_w - size) // 2, k * step, size, size) for k in range(3)]


def test_view_rois(src_w: int, src_h: int, input_size: int, num_crop: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Source-pixel ROIs of the test crops: 1 crop = short side ``int(S*256/224)`` then centre crop;
    3 crops = short side ``S`` then left/centre/right."""
    if num_crop == 1:
        res_w, res_h = resized_size(src_w, src_h, short_side_for(input_size))
        windows = [center_crop_window(res_w, res_h, input_size)]
    elif num_crop == 3:
        res_w, res_h = resized_size(src_w, src_h, input_size)
        windows = three_crop_windows(res_w, res_h, input_size)
    else:
        raise ValueError(f"TEST.NUM_CROP must be 1 or 3, got {num_crop}")
    return [roi_in_source(w, src_w, src_h, res_w, res_h) for w in windows]
