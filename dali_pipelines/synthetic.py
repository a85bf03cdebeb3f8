"""Synthetic motion-only action datasets (PyAV encoding) for tests, demos and benchmarks."""
# (implementation in progress)
from __future__ import annotations

import numpy as np

CLASSES = ("growing", "moving down", "moving up", "shrinking")


def write_video(path: str, frames: np.ndarray, codec: str = "vp9", fps: int = 25, gop: int | None = None,
                **opts) -> None:
    raise NotImplementedError


def motion_clip(cls_name: str, num_frames: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    raise NotImplementedError


def make_synthetic_dataset(out_dir: str, codec: str = "vp9", train_per_class: int = 64, val_per_class: int = 24,
                           num_frames: int = 32, size: tuple[int, int] = (128, 96), fps: int = 25,
                           gop: int | None = None, seed: int = 0, workers: int = 0, progress: bool = True) -> dict:
    raise NotImplementedError
