"""PyAV (FFmpeg) video reading used by the CPU decode route, the dataset index, tests and benchmarks.

Frame numbering everywhere is the presentation order of the decoded stream, i.e. the order in which the decoder
emits frames: frame ``i`` is the ``i``-th decoded frame. That is the numbering DALI's ``fn.decoders.video(frames=...)``
uses, so indices computed for one route mean the same frames on the other.
"""
# (implementation in progress)
from __future__ import annotations

import numpy as np

__all__ = ["BadVideoError", "decode_frames", "count_frames"]


class BadVideoError(RuntimeError):
    """A video cannot be (fully) read: missing, empty, not a container, no video stream, truncated, ..."""


def decode_frames(path: str, indices, threads: int = 0) -> np.ndarray:
    """Decode frames ``indices`` (any order, duplicates allowed) -> uint8 ``(len(indices), H, W, 3)`` RGB."""
    raise NotImplementedError


def count_frames(path: str) -> int:
    """Number of frames a full decode yields."""
    raise NotImplementedError
