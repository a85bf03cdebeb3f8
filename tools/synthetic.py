"""Synthetic action-recognition data: motion-only classes rendered with numpy and encoded with PyAV (the demo's
dataset, and the clips of tests and benchmarks).

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

Class folder names contain spaces, like real Kinetics class folders, so path handling with spaces is exercised.

No DALI import here.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time

import numpy as np

from dali_pipelines.pyav_encode import CODECS, write_video
from evautil.files import atomic_write_text
from evautil.workers import map_with_progress

__all__ = ["CLASSES", "CODECS", "write_video", "motion_clip", "make_synthetic_dataset"]

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
    T = num_frames
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

    t = np.arange(T, dtype=np.float32)[:, None, None]
    ys = np.arange(h, dtype=np.float32)[None, :, None]
    xs = np.arange(w, dtype=np.float32)[None, None, :]
    frames = np.broadcast_to(bg_base.astype(np.float32), (T, h, w, 3)).copy()
    for k in range(n_grat):
        fx, fy = freq[k] * np.cos(theta[k]), freq[k] * np.sin(theta[k])
        wave = np.sin(2 * np.pi * (fx * (xs - drift * t) + fy * ys) + phase[k]).astype(np.float32)  # (T, h, w)
        frames += wave[..., None] * amps[k].astype(np.float32)

    dx = np.abs(xs - np.float32(cx))
    dy = np.abs(ys - cy.astype(np.float32)[:, None, None])
    if shape == "disc":
        dist = np.sqrt(dx * dx + dy * dy)
    elif shape == "square":
        dist = np.maximum(dx, dy)
    else:  # diamond, scaled to about the disc's area
        dist = (dx + dy) * np.float32(1 / np.sqrt(np.pi / 2))
    # Anti-aliased edge (one-pixel ramp) keeps motion smooth at sub-pixel speeds.
    alpha = np.clip(radius.astype(np.float32)[:, None, None] - dist + 0.5, 0.0, 1.0)[..., None]
    frames = frames * (1 - alpha) + colour.astype(np.float32) * alpha
    out = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    if return_meta:
        meta = {"shape": shape, "colour": colour, "cx": float(cx), "cy": cy, "radius": radius,
                "drift": float(drift)}
        return out, meta
    return out


# ----------------------------------------------------------------------------------------------------------------
# Dataset


def _clip_seed(seed: int, label: int, i: int) -> list[int]:
    return [int(seed), int(label), int(i)]


def _write_job(job: tuple) -> str:
    """Worker: render and encode one clip (all randomness from (seed, label, i), so order does not matter)."""
    path, cls_name, label, i, seed, size, codec, fps, gop, num_frames = job
    rng = np.random.default_rng(_clip_seed(seed, label, i))
    frames = motion_clip(cls_name, num_frames, size, rng)
    tmp = path + ".part" + CODECS[codec][1]  # keep the extension: the muxer is chosen from it
    write_video(tmp, frames, codec=codec, fps=fps, gop=gop)
    os.replace(tmp, path)  # a crash never leaves a half-written clip under the final name
    return path


def make_synthetic_dataset(out_dir: str, codec: str = "vp9", train_per_class: int = 64, val_per_class: int = 24,
                           num_frames: int = 32, size: tuple[int, int] = (128, 96), fps: float = 25,
                           gop: int | None = None, seed: int = 0, workers: int = 0, progress: bool = True,
                           force: bool = False) -> dict:
    """Write a motion-only synthetic dataset in the original list format.

    Layout: ``out_dir/videos/<class>/<class>_<i><ext>`` (train clips are ``i < train_per_class``, val clips follow),
    ``out_dir/train.txt`` and ``out_dir/val.txt`` (``<path relative to out_dir> <label>``, label = position of the
    class in sorted order), ``out_dir/labels.csv`` (``id,name``) and ``out_dir/dataset.json`` (the parameters, written
    last). Clips are rendered and encoded in ``workers`` processes (0 = all cores). The result is a deterministic
    function of the parameters, to the byte (two generations run at once on a 2-core machine: 0 of 1120 clips
    differ; before ``write_video`` turned off x264's lookahead thread and macroblock tree, 411 did); when
    ``dataset.json`` shows a complete dataset with the same parameters and all files exist, nothing is regenerated
    (unless ``force``); when it shows a run with the same parameters stopped halfway, its finished clips (each
    renamed into place only once whole) are kept and only the others written.

    Returns:
        Summary dict: paths (``out_dir``, ``train_list``, ``val_list``, ``labels_csv``), ``classes``,
        ``num_train``, ``num_val``, the parameters, ``skipped`` (True when reused) and ``seconds``.
    """
    params = _dataset_params(codec, train_per_class, val_per_class, num_frames, size, fps, gop, seed)
    out_dir = os.path.abspath(out_dir)
    meta_path = os.path.join(out_dir, "dataset.json")
    train_list, val_list = os.path.join(out_dir, "train.txt"), os.path.join(out_dir, "val.txt")
    labels_csv = os.path.join(out_dir, "labels.csv")
    rel, jobs = _clip_jobs(out_dir, params)

    summary = {"out_dir": out_dir, "train_list": train_list, "val_list": val_list, "labels_csv": labels_csv,
               "classes": list(CLASSES), "num_train": len(rel["train"]), "num_val": len(rel["val"]), **params}
    t0 = time.perf_counter()
    if not force and _complete(meta_path, params, [j[0] for j in jobs] + [train_list, val_list, labels_csv]):
        return {**summary, "skipped": True, "seconds": time.perf_counter() - t0}

    jobs = _clips_left(out_dir, meta_path, params, jobs, (train_list, val_list, labels_csv), force)
    os.makedirs(out_dir, exist_ok=True)
    # marks the folder as this dataset's from the start, so that a run stopped halfway is taken up again, not refused
    atomic_write_text(meta_path, json.dumps({**params, "complete": False}, indent=1) + "\n")
    _write_clips(out_dir, jobs, workers, progress)
    for split, path in (("train", train_list), ("val", val_list)):
        atomic_write_text(path, "".join(f"{p} {label}\n" for p, label in rel[split]))
    atomic_write_text(labels_csv, "id,name\n" + "".join(f"{i},{name}\n" for i, name in enumerate(CLASSES)))
    atomic_write_text(meta_path, json.dumps({**params, "complete": True}, indent=1) + "\n")
    return {**summary, "skipped": False, "seconds": time.perf_counter() - t0}


def _dataset_params(codec: str, train_per_class: int, val_per_class: int, num_frames: int, size: tuple[int, int],
                    fps: float, gop: int | None, seed: int) -> dict:
    """The parameters ``dataset.json`` records (the clips are a function of them), once checked."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    if train_per_class < 0 or val_per_class < 0 or train_per_class + val_per_class == 0:
        raise ValueError(f"need clips: train_per_class={train_per_class}, val_per_class={val_per_class}")
    return {"version": 1, "codec": codec, "train_per_class": int(train_per_class),
            "val_per_class": int(val_per_class), "num_frames": int(num_frames), "size": [int(size[0]), int(size[1])],
            "fps": float(fps), "gop": gop, "seed": int(seed), "classes": list(CLASSES)}


def _clip_jobs(out_dir: str, params: dict) -> tuple[dict[str, list[tuple[str, int]]], list[tuple]]:
    """``{split: [(path relative to out_dir, label)]}`` of the lists, and the :func:`_write_job` of every clip."""
    ext = CODECS[params["codec"]][1]
    size = tuple(params["size"])
    rel: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    jobs = []
    for label, cls_name in enumerate(CLASSES):
        for i in range(params["train_per_class"] + params["val_per_class"]):
            rel_path = os.path.join("videos", cls_name, f"{cls_name}_{i}{ext}")
            rel["train" if i < params["train_per_class"] else "val"].append((rel_path, label))
            jobs.append((os.path.join(out_dir, rel_path), cls_name, label, i, params["seed"], size, params["codec"],
                         params["fps"], params["gop"], params["num_frames"]))
    return rel, jobs


def _clips_left(out_dir: str, meta_path: str, params: dict, jobs: list[tuple], lists: tuple[str, ...],
                force: bool) -> list[tuple]:
    """The jobs of the clips still to write into ``out_dir``, whatever it holds: a run with the same parameters
    stopped halfway (its finished clips kept), one with other parameters (its clips removed), or ``lists`` that no
    ``dataset.json`` marks as a synthetic dataset's (FileExistsError, unless ``force``)."""
    if not force and _stored_params(meta_path) == params:
        # The same dataset, stopped halfway: its finished clips are the bytes this run would write (a clip is a
        # function of the parameters); the half-written ones never got their final name.
        _remove_parts(out_dir)
        return [j for j in jobs if not (os.path.isfile(j[0]) and os.path.getsize(j[0]) > 0)]
    if os.path.exists(meta_path):
        # Ours (dataset.json marks it) but with other parameters: drop the old clips so no stale file lingers.
        os.unlink(meta_path)
        shutil.rmtree(os.path.join(out_dir, "videos"), ignore_errors=True)
    elif not force:
        # Lists no dataset.json marks as ours are someone's data: they were overwritten without a word.
        theirs = [os.path.basename(p) for p in lists if os.path.exists(p)]
        if theirs:
            raise FileExistsError(errno.EEXIST, f"{out_dir} holds {', '.join(theirs)} but no dataset.json, so they "
                                  "are not a synthetic dataset's: give a new or empty folder (--force overwrites "
                                  "them)", out_dir)
    return jobs


def _write_clips(out_dir: str, jobs: list[tuple], workers: int, progress: bool) -> None:
    """Render and encode the clips of ``jobs`` into their class folders, in ``workers`` processes."""
    from evautil.progress import stderr_is_terminal, stderr_line

    for cls_name in CLASSES:
        os.makedirs(os.path.join(out_dir, "videos", cls_name), exist_ok=True)
    # A bar only on a terminal; in a log file, plain lines (every 30 s, and the total time) instead of its redraws.
    for _ in map_with_progress(_write_job, jobs, workers, "synthetic clips", progress=progress and stderr_is_terminal(),
                               unit="clip", ordered=False, log=stderr_line if progress else None):
        pass


def _stored_params(meta_path: str) -> dict | None:
    """The parameters ``dataset.json`` records, without its ``complete`` mark; None when it cannot be read."""
    try:
        with open(meta_path, encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict):
        return None
    stored.pop("complete", None)
    return stored


def _remove_parts(out_dir: str) -> None:
    """The ``.part`` files of clips a stopped run was writing (:func:`_write_job`)."""
    for cls_name in CLASSES:
        folder = os.path.join(out_dir, "videos", cls_name)
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if ".part" in name:
                    os.unlink(os.path.join(folder, name))


def _complete(meta_path: str, params: dict, files: list[str]) -> bool:
    try:
        with open(meta_path, encoding="utf-8") as f:
            complete = json.load(f).get("complete") is True  # False: a run stopped halfway
    except (OSError, ValueError, AttributeError):
        return False
    return complete and _stored_params(meta_path) == params and all(os.path.isfile(p) and os.path.getsize(p) > 0
                                                                    for p in files)
