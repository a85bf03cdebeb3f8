"""torchvision ``ColorJitter`` semantics inside the DALI graph, and the grayscale that follows it.

The original ran ``torchvision.transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)`` on PIL frames: brightness scales,
contrast blends with the image's mean grey level, saturation blends with the pixel's grey level, hue is a shift of
the H channel in HSV, each result clamped to the valid range, and the four operations run in a random order drawn
per call. DALI's ``color_twist`` / ``hsv`` pivot contrast at mid-grey, fix the order and rotate hue in YIQ (a linear
approximation), so this module builds the four operations from DALI's arithmetic instead:

- brightness ``b``:  ``x -> clamp(b x)``
- contrast ``c``:    ``x -> clamp(c x + (1 - c) mean_grey)``; ``mean_grey`` is the mean of
  ``0.2989 R + 0.587 G + 0.114 B`` over the whole clip (over each frame in per-frame mode), taken on the clip as it
  is when the operation runs, as torchvision takes it on the image it is given
- saturation ``s``:  ``x -> clamp(s x + (1 - s) grey(x))``
- hue ``h`` degrees: RGB -> HSV, ``H += h``, HSV -> RGB, exactly as torchvision's tensor ``adjust_hue``
- grayscale:         ``x -> grey(x)`` in all three channels, after the jitter (the original's ``GrayScale``)

Values stay float32 in [0, 255] between operations (no rounding to 8 bits in between, as torchvision on float
tensors; PIL rounded after each operation, which moves pixels by up to one grey level per step).

Which operations run, and in which order, is a per-sample program of ``NUM_SLOTS`` int32 codes (``color_ops``):
the sample's four jitter operations in its random order, then the grayscale, with ``OP_NONE`` for what does not
run. ``make_color_ops`` writes it from the draws; the graph runs slot by slot with DALI conditionals, so the
pipeline must be defined with ``enable_conditionals=True``. In per-frame mode (``AUG.JITTER_PER_FRAME``) the
factors are drawn per frame as the original's were, but the order stays one per clip.
"""

from __future__ import annotations

import numpy as np
import nvidia.dali.math as dmath
from nvidia.dali import fn, types

__all__ = ["OP_NONE", "OP_BRIGHTNESS", "OP_CONTRAST", "OP_SATURATION", "OP_HUE", "OP_GRAYSCALE", "NUM_SLOTS",
           "GREY_WEIGHTS", "make_color_ops", "jitter_frames"]

OP_NONE, OP_BRIGHTNESS, OP_CONTRAST, OP_SATURATION, OP_HUE, OP_GRAYSCALE = -1, 0, 1, 2, 3, 4
NUM_SLOTS = 5  # four jitter operations, then the grayscale
# torchvision's grey level (its rgb_to_grayscale); PIL's convert('L') uses 0.299, which moves a pixel < 0.03 levels.
GREY_WEIGHTS = (0.2989, 0.587, 0.114)


def make_color_ops(order: np.ndarray, jitter: bool, gray: bool) -> np.ndarray:
    """The ``color_ops`` program of one clip: ``order`` (a permutation of the four jitter codes) when ``jitter``
    fires, then ``OP_GRAYSCALE`` when ``gray`` does; ``OP_NONE`` elsewhere. int32, shape (NUM_SLOTS,)."""
    ops = np.full(NUM_SLOTS, OP_NONE, dtype=np.int32)
    if jitter:
        ops[:4] = order
    if gray:
        ops[4] = OP_GRAYSCALE
    return ops


def _grey(x):
    """Grey level of every pixel of float FHWC frames: (F, H, W, 1)."""
    weights = types.Constant(np.array(GREY_WEIGHTS, dtype=np.float32))
    return fn.reductions.sum(x * weights, axes=[3], keep_dims=True)


def _per_frame(factor, per_frame: bool):
    # A per-frame factor (F,) must broadcast over (F, H, W, C); a per-clip one is a scalar already.
    return fn.reshape(factor, shape=[-1, 1, 1, 1]) if per_frame else factor


def _clamp(x):
    return dmath.clamp(x, 0.0, 255.0)


def _contrast(x, c, per_frame: bool):
    mean = fn.reductions.mean(_grey(x), axes=[1, 2] if per_frame else [0, 1, 2], keep_dims=True)
    return _clamp(c * x + (1.0 - c) * mean)


def _hue(x, degrees):
    """torchvision's ``adjust_hue`` (``_rgb2hsv``, shift, ``_hsv2rgb``) on float FHWC frames in [0, 255].

    A hue shift keeps each pixel's max and min channel, so with ``M`` = max, ``C`` = max - min and the hue ``H`` in
    sixths of the circle, channel n of the result is ``M - C clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + H) mod 6`` and n = 5, 3, 1 for R, G, B: the closed form of ``_hsv2rgb``'s six sectors.
    """
    r, g, b = x[:, :, :, 0:1], x[:, :, :, 1:2], x[:, :, :, 2:3]
    top = fn.reductions.max(x, axes=[3], keep_dims=True)
    span = top - fn.reductions.min(x, axes=[3], keep_dims=True)
    divisor = span + (span == 0.0)  # grey pixels: any hue, C = 0 keeps them as they are
    # _rgb2hsv's masks: red wins ties, then green.
    is_r = top == r
    is_g = (top == g) & (top != r)
    is_b = (top != g) & (top != r)
    sixths = (is_r * (g - b) + is_g * (2.0 * span + b - r) + is_b * (4.0 * span + r - g)) / divisor
    sixths = sixths + degrees / 60.0

    def channel(n: float):
        k = sixths + n
        k = k - 6.0 * dmath.floor(k / 6.0)
        return top - span * dmath.clamp(dmath.min(k, 4.0 - k), 0.0, 1.0)

    return fn.cat(channel(5.0), channel(3.0), channel(1.0), axis=3)


def jitter_frames(frames, color_ops, brightness, contrast, saturation, hue, *, per_frame: bool = False):
    """Run one clip's colour program (module docstring) on ``frames``: uint8 or float FHWC RGB.

    Args:
        frames: DataNode, FHWC, on the CPU or the GPU.
        color_ops: DataNode int32 (NUM_SLOTS,) per sample, from ``make_color_ops``.
        brightness, contrast, saturation: DataNodes of multiplicative factors, scalars per sample (or (F,) with
            ``per_frame``).
        hue: DataNode, hue shift in degrees, shaped like the factors.
        per_frame: factors are per frame and contrast uses each frame's mean grey.

    Returns:
        float32 FHWC frames in [0, 255]. Needs a pipeline with ``enable_conditionals=True``.
    """
    x = fn.cast(frames, dtype=types.FLOAT)
    b, c = _per_frame(brightness, per_frame), _per_frame(contrast, per_frame)
    s, h = _per_frame(saturation, per_frame), _per_frame(hue, per_frame)
    for slot in range(NUM_SLOTS):
        op = color_ops[slot]
        if op == OP_BRIGHTNESS:
            x = _clamp(b * x)
        elif op == OP_CONTRAST:
            x = _contrast(x, c, per_frame)
        elif op == OP_SATURATION:
            x = _clamp(s * x + (1.0 - s) * _grey(x))
        elif op == OP_HUE:
            x = _hue(x, h)
        elif op == OP_GRAYSCALE:
            x = fn.cat(*([_grey(x)] * 3), axis=3)
    return x
