"""Temporal frame sampling (pure numpy, no DALI).

Every function returns frame indices in ``[0, num_frames)``; the loaders hand them to the decoder, which decodes
exactly those frames. Randomness always comes from an explicit ``numpy.random.Generator`` so that a sample's clip
depends only on the generator's key (see :func:`sample_rng`), never on worker count or call order.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "sample_rng",
    "segment_indices",
    "multiview_indices",
    "dense_indices",
    "dense_multiview_indices",
]


def sample_rng(seed: int, epoch: int, row: int) -> np.random.Generator:
    """The generator of one sample: keyed by (seed, epoch, row in the list), independent of everything else."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(row)])


def _check(num_frames: int, num_segments: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")


def segment_indices(num_frames: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """TSN training sampling, exactly the original's ``SampleFrames(clip_len=1, num_clips=T)``.

    ``avg = n // T``; frame ``i`` is ``i*avg + randint(avg)`` (independent jitter per segment, the last ``n % T``
    frames are never used). When ``n < T`` the indices are ``round(arange(T) * n / T)`` (numpy's round-half-even,
    as the original), so frames repeat.
    """
    _check(num_frames, num_segments)
    n, t = int(num_frames), int(num_segments)
    avg = n // t
    if avg > 0:
        return (np.arange(t, dtype=np.int64) * avg + rng.integers(0, avg, size=t)).astype(np.int64)
    return np.around(np.arange(t) * (n / t)).astype(np.int64) % n


def multiview_indices(num_frames: int, num_segments: int, num_clips: int, mode: str = "uniform",
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices of ``num_clips`` TSN clips of one video, an int64 array ``(num_clips, num_segments)``.

    ``'uniform'`` (deterministic): ``idx[k, i] = floor((i + (k + 0.5) / num_clips) * n / num_segments)``; the
    clips interleave inside each segment. For one clip this is the original's test-mode segment centres
    ``int(i*n/T + n/(2T))``. Computed in integers so that no float rounding can move an index.
    ``'random'``: the original's multi-clip test, ``num_clips`` independent jittered samplings (needs ``rng``);
    one clip is the segment centres there too (the original samples a single test clip in test mode).
    """
    _check(num_frames, num_segments)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    n, t, c = int(num_frames), int(num_segments), int(num_clips)
    if mode == "uniform" or (mode == "random" and c == 1):
        i = np.arange(t, dtype=np.int64)[None, :]
        k = np.arange(c, dtype=np.int64)[:, None]
        # (i + (k+0.5)/c) * n / t  ==  (2*(i*c + k) + 1) * n / (2*c*t), floored exactly.
        return ((2 * (i * c + k) + 1) * n) // (2 * c * t)
    if mode == "random":
        if rng is None:
            raise ValueError("multiview_indices(mode='random') needs an rng")
        return np.stack([segment_indices(n, t, rng) for _ in range(c)])
    raise ValueError(f"unknown multi-view sampling mode {mode!r} (expected 'uniform' or 'random')")


def dense_indices(num_frames: int, clip_len: int, frame_interval: int, rng: np.random.Generator) -> np.ndarray:
    """Dense sampling: ``clip_len`` frames ``frame_interval`` apart from a random start (SlowFast/VideoMAE style).

    When the video is shorter than the span, the start is 0 and indices past the end are clamped to the last frame.
    """
    _check(num_frames, clip_len)
    if frame_interval < 1:
        raise ValueError(f"frame_interval must be >= 1, got {frame_interval}")
    n = int(num_frames)
    span = (clip_len - 1) * frame_interval + 1
    start = int(rng.integers(0, max(n - span, 0) + 1))
    return np.minimum(start + np.arange(clip_len, dtype=np.int64) * frame_interval, n - 1)


def dense_multiview_indices(num_frames: int, clip_len: int, frame_interval: int, num_clips: int,
                            mode: str = "uniform", rng: np.random.Generator | None = None) -> np.ndarray:
    """``num_clips`` dense clips, ``(num_clips, clip_len)``: evenly spaced starts ('uniform'; one clip is centred)
    or independent random starts ('random'; one clip is centred too, as TSN's single test clip is)."""
    _check(num_frames, clip_len)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    n = int(num_frames)
    span = (clip_len - 1) * frame_interval + 1
    if mode == "uniform" or (mode == "random" and num_clips == 1):
        room = max(n - span, 0)
        if num_clips == 1:
            starts = np.array([room // 2], dtype=np.int64)
        else:
            starts = (np.arange(num_clips, dtype=np.int64) * room) // (num_clips - 1)
        idx = starts[:, None] + np.arange(clip_len, dtype=np.int64)[None, :] * frame_interval
        return np.minimum(idx, n - 1)
    if mode == "random":
        if rng is None:
            raise ValueError("dense_multiview_indices(mode='random') needs an rng")
        return np.stack([dense_indices(n, clip_len, frame_interval, rng) for _ in range(num_clips)])
    raise ValueError(f"unknown multi-view sampling mode {mode!r} (expected 'uniform' or 'random')")
