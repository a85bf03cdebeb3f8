"""Synthetic action-recognition clips: motion-only classes rendered with numpy (the frames of the demo's dataset,
and of the clips of tests and benchmarks; ``tools.synthetic`` encodes them with PyAV and writes the dataset).

The classes differ **only in motion**, so a model (or a loader bug) that looks at single frames cannot beat chance:

* ``moving up`` / ``moving down``: an object translates vertically at constant speed;
* ``growing`` / ``shrinking``: an object scales up / down about a fixed centre.

Every per-frame quantity has the same distribution in every class: the object's vertical position and size at a
random frame are drawn from identical marginals (static quantities are sampled from the marginal that the moving
ones sweep through), its horizontal position, shape and colour are class-independent, and the textured background
is the same random process for all classes. Shapes (disc, square, diamond) are left-right symmetric and all motion
is vertical or radial, so a horizontally flipped clip is a valid clip of the same class (flip augmentation is
label-preserving). The background is a sum of soft colour gratings drifting sideways (random direction), which codecs
compress well yet makes every frame different from its neighbours.

Class names contain spaces, like real Kinetics class folders, so path handling with spaces is exercised.

No DALI import here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLASSES", "motion_clip"]

CLASSES: tuple[str, ...] = ("growing", "moving down", "moving up", "shrinking")  # sorted: label = position

_SHAPES = ("disc", "square", "diamond")


def _sweep(rng: np.random.Generator, lo: float, hi: float, span: float, moving: int, u: np.ndarray) -> np.ndarray:
    """A quantity over time within [lo, hi]: sweeps ``span`` up (moving=+1) or down (-1), or stays (0).

    A static value is drawn from exactly the distribution a sweeping value has at a uniformly random time
    (``U[lo, hi - span] + span * U[0, 1]``), so a single frame does not tell moving from static. Up and down sweeps
    are mirror images of each other with a symmetric marginal, so they match too.
    """
    base = rng.uniform(lo, hi - span)
    if moving == 0:
        return np.full_like(u, base + span * rng.uniform())
    return base + span * (u if moving > 0 else 1.0 - u)


def _object_colour(rng: np.random.Generator, bg_base: np.ndarray, bg_amp: float) -> np.ndarray:
    # Class-independent colour that stands out from every background pixel (some channel differs by a margin
    # larger than the background's texture amplitude), so the object is visible and can be measured in tests.
    for _ in range(1000):
        c = rng.uniform(20, 235, size=3)
        if np.max(np.abs(c - bg_base)) > bg_amp + 60:
            return c
    return np.where(bg_base > 127, 20.0, 235.0)


def motion_clip(cls_name: str, num_frames: int, size: tuple[int, int], rng: np.random.Generator,
                return_meta: bool = False) -> np.ndarray | tuple[np.ndarray, dict]:
    """Render one clip of class ``cls_name``.

    Args:
        cls_name: one of :data:`CLASSES`.
        num_frames: T.
        size: ``(width, height)``.
        rng: the only source of randomness (same generator state -> same clip).
        return_meta: also return the ground truth: ``shape``, ``colour`` (3,), ``cx``, per-frame ``cy`` and
            ``radius`` (T,) in pixels, background ``drift`` (px/frame, signed).

    Returns:
        uint8 ``(T, H, W, 3)`` RGB frames (and the meta dict when asked).
    """
    if cls_name not in CLASSES:
        raise ValueError(f"unknown class {cls_name!r}; classes are {list(CLASSES)}")
    w, h = int(size[0]), int(size[1])
    if num_frames < 1 or w < 8 or h < 8:
        raise ValueError(f"need num_frames >= 1 and a size of at least 8x8, got {num_frames} frames, {w}x{h}")
    scene = _scene(cls_name, num_frames, w, h, rng)
    # One frame at a time, into the clip's uint8 frames: the float intermediates of the whole clip (its gratings'
    # phases in float64) were 48 bytes a pixel, 16 times the clip. Each operation is per pixel, so the frames are
    # those of the clip rendered at once, to the bit.
    out = np.empty((num_frames, h, w, 3), np.uint8)
    for i in range(num_frames):
        out[i:i + 1] = _render(scene, slice(i, i + 1), w, h)
    if return_meta:
        meta = {"shape": scene["shape"], "colour": scene["colour"], "cx": float(scene["cx"]), "cy": scene["cy"],
                "radius": scene["radius"], "drift": float(scene["drift"])}
        return out, meta
    return out


def _scene(cls_name: str, T: int, w: int, h: int, rng: np.random.Generator) -> dict:
    """What :func:`motion_clip` draws from ``rng`` for a clip of class ``cls_name``: the object's path, shape and
    colour, and the background's gratings."""
    u = np.linspace(0.0, 1.0, T) if T > 1 else np.zeros(1)
    m = min(w, h)

    vertical = {"moving up": -1, "moving down": +1}.get(cls_name, 0)  # image y grows downwards
    radial = {"growing": +1, "shrinking": -1}.get(cls_name, 0)
    # Sweep spans are drawn for every class (used or not) so all classes consume the generator alike.
    span_y = rng.uniform(0.30, 0.50) * h
    span_r = rng.uniform(0.40, 0.70) * (0.30 - 0.08) * m
    cy = _sweep(rng, 0.15 * h, 0.85 * h, span_y, vertical, u)
    radius = _sweep(rng, 0.08 * m, 0.30 * m, span_r, radial, u)
    cx = rng.uniform(0.3, 0.7) * (w - 1)  # symmetric about the centre line: flip-invariant distribution
    shape = _SHAPES[rng.integers(len(_SHAPES))]

    # Background: base colour + 3 soft gratings drifting horizontally (direction random, so flips are harmless).
    bg_base = rng.uniform(70, 185, size=3)
    n_grat = 3
    amps = rng.uniform(4, 14, size=(n_grat, 3))
    bg_amp = float(np.abs(amps).sum(axis=0).max())
    freq = rng.uniform(1 / 40, 1 / 10, size=n_grat)  # cycles per pixel
    theta = rng.uniform(0, np.pi, size=n_grat)
    phase = rng.uniform(0, 2 * np.pi, size=n_grat)
    drift = rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.6)
    colour = _object_colour(rng, bg_base, bg_amp)
    return {"shape": shape, "cx": cx, "cy": cy, "radius": radius, "colour": colour, "bg_base": bg_base,
            "amps": amps, "freq": freq, "theta": theta, "phase": phase, "drift": drift}


def _render(scene: dict, span: slice, w: int, h: int) -> np.ndarray:
    """The uint8 frames ``span`` of the clip of ``scene`` (:func:`_scene`): its gratings, the object drawn over
    them."""
    amps, freq, theta, phase, drift = (scene[k] for k in ("amps", "freq", "theta", "phase", "drift"))
    shape, cx, cy, radius, colour = (scene[k] for k in ("shape", "cx", "cy", "radius", "colour"))
    t = np.arange(span.start, span.stop, dtype=np.float32)[:, None, None]
    ys = np.arange(h, dtype=np.float32)[None, :, None]
    xs = np.arange(w, dtype=np.float32)[None, None, :]
    frames = np.broadcast_to(scene["bg_base"].astype(np.float32), (len(t), h, w, 3)).copy()
    for k in range(len(freq)):
        fx, fy = freq[k] * np.cos(theta[k]), freq[k] * np.sin(theta[k])
        wave = np.sin(2 * np.pi * (fx * (xs - drift * t) + fy * ys) + phase[k]).astype(np.float32)  # (t, h, w)
        frames += wave[..., None] * amps[k].astype(np.float32)

    dx = np.abs(xs - np.float32(cx))
    dy = np.abs(ys - cy[span].astype(np.float32)[:, None, None])
    if shape == "disc":
        dist = np.sqrt(dx * dx + dy * dy)
    elif shape == "square":
        dist = np.maximum(dx, dy)
    else:  # diamond, scaled to about the disc's area
        dist = (dx + dy) * np.float32(1 / np.sqrt(np.pi / 2))
    # Anti-aliased edge (one-pixel ramp) keeps motion smooth at sub-pixel speeds.
    alpha = np.clip(radius[span].astype(np.float32)[:, None, None] - dist + 0.5, 0.0, 1.0)[..., None]
    frames = frames * (1 - alpha) + colour.astype(np.float32) * alpha
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)
