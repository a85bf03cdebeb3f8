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
           "GREY_WEIGHTS", "make_color_ops", "jitter_frames", "hue_shifted"]

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


def _grey(r, g, b):
    """Grey level of every pixel, from the three colour planes."""
    return GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b


def _per_frame(factor, per_frame: bool):
    # A per-frame factor (F,) must broadcast over (F, H, W) planes; a per-clip one is a scalar already.
    return fn.reshape(factor, shape=[-1, 1, 1]) if per_frame else factor


def _clamp(x):
    return dmath.clamp(x, 0.0, 255.0)


def _contrast(planes, c, per_frame: bool):
    mean = fn.reductions.mean(_grey(*planes), axes=[1, 2] if per_frame else [0, 1, 2], keep_dims=per_frame)
    offset = (1.0 - c) * mean
    return tuple(_clamp(c * p + offset) for p in planes)


def _saturation(planes, s):
    grey = (1.0 - s) * _grey(*planes)
    return tuple(_clamp(s * p + grey) for p in planes)


def _hue(r, g, b, degrees):
    """torchvision's ``adjust_hue`` on float colour planes in [0, 255] (see :func:`hue_shifted`)."""
    top = dmath.max(dmath.max(r, g), b)
    return hue_shifted(r, g, b, top, top - dmath.min(dmath.min(r, g), b), degrees)


def hue_shifted(r, g, b, top, span, degrees):
    """torchvision's ``adjust_hue`` (``_rgb2hsv``, shift, ``_hsv2rgb``): the shifted R, G, B of float channels in
    [0, 255], given each pixel's max channel ``top`` and ``span`` = max - min.

    A hue shift keeps each pixel's max and min channel, so with ``M`` = max, ``C`` = max - min and the hue ``H`` in
    sixths of the circle, channel n of the result is ``M - C clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + H) mod 6`` and n = 5, 3, 1 for R, G, B: the closed form of ``_hsv2rgb``'s six sectors.
    """
    divisor = span + (span == 0.0)  # grey pixels: any hue, C = 0 keeps them as they are
    # _rgb2hsv's masks: red wins ties, then green.
    not_r = top != r
    is_r = top == r
    is_g = (top == g) & not_r
    is_b = (top != g) & not_r
    sixths = (is_r * (g - b) + is_g * (2.0 * span + b - r) + is_b * (4.0 * span + r - g)) / divisor
    sixths = sixths + degrees / 60.0

    def channel(n: float):
        k = sixths + n
        k = k - 6.0 * dmath.floor(k / 6.0)
        return top - span * dmath.clamp(dmath.min(k, 4.0 - k), 0.0, 1.0)

    return channel(5.0), channel(3.0), channel(1.0)


def jitter_frames(frames, color_ops, brightness, contrast, saturation, hue, *, per_frame: bool = False):
    """Run one clip's colour program (module docstring) on ``frames``: uint8 or float FHWC RGB.

    The program works on the three colour planes separately (F, H, W each): every operation is then elementwise
    arithmetic on contiguous planes, with no reduction or concatenation along the interleaved channel axis, which
    is what made the interleaved version slow on the CPU. A clip whose program is empty skips the planes.

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
    if fn.reductions.max(color_ops) == OP_NONE:  # nothing to run for this clip: skip the planes
        return fn.cast(frames, dtype=types.FLOAT)
    # Slice the planes out of the 8-bit frames, then widen: a quarter of the bytes move through the slice.
    r, g, b = (fn.cast(frames[:, :, :, c], dtype=types.FLOAT) for c in range(3))
    bf, cf = _per_frame(brightness, per_frame), _per_frame(contrast, per_frame)
    sf, hf = _per_frame(saturation, per_frame), _per_frame(hue, per_frame)
    for slot in range(NUM_SLOTS):
        op = color_ops[slot]
        if op == OP_BRIGHTNESS:
            r, g, b = _clamp(bf * r), _clamp(bf * g), _clamp(bf * b)
        elif op == OP_CONTRAST:
            r, g, b = _contrast((r, g, b), cf, per_frame)
        elif op == OP_SATURATION:
            r, g, b = _saturation((r, g, b), sf)
        elif op == OP_HUE:
            r, g, b = _hue(r, g, b, hf)
        elif op == OP_GRAYSCALE:
            grey = _grey(r, g, b)
            r, g, b = grey, grey, grey
    return fn.stack(r, g, b, axis=3, axis_name="C")
