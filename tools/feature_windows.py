r"""The sliding-window mode of ``tools.extract_features``: where the windows of W frames every S frames lie along a
video (:func:`window_starts`, :func:`window_frames`, and :func:`window_settings_error`, the settings refused), and
:func:`extract_windows`, which probes the videos, decodes each one's windows with PyAV on the host (each frame once,
in order), resizes and normalises them on the device as the 1-crop test does (:func:`roi_resize`) and hands each
video's pooled features, or the reason it cannot be read, to a store.

torch and the data pipeline are imported in the functions that use them: ``tools.extract_features`` imports this
module at its top, and the loader's worker processes import that module again (evautil/workers.py).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from tools.feature_store import NonFiniteFeaturesError

if TYPE_CHECKING:
    import torch

    from tools.feature_store import FeatureStore

__all__ = ["window_settings_error", "check_window", "window_starts", "window_frames", "roi_resize",
           "extract_windows"]


def window_settings_error(window: int | None, stride: int | None, prefix: str = "") -> str | None:
    """Why a window setting is unusable, or None; the command (``prefix`` ``--``: its flags' names) and
    :meth:`tools.predict.Predictor.features` (its arguments' names) refuse the same settings with the same words.
    None means not given: the test views, and a stride of one window."""
    if window is not None and window < 1:  # 0 used to mean the test views without a word
        return f"{prefix}window must be at least 1, got {window}"
    if stride is not None and window is None:
        return f"{prefix}stride needs {prefix}window"
    if stride is not None and stride < 1:  # 0 used to mean --window without a word
        return f"{prefix}stride must be at least 1, got {stride}"
    return None


def check_window(window: int, stride: int) -> None:
    """:func:`window_settings_error` for ``tools.extract_features``' ``extract`` and ``extract_into``, whose 0
    means not given."""
    problem = window_settings_error(window or None, stride or None)
    if problem:
        raise ValueError(problem)


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """First frames of the windows of ``window`` frames every ``stride`` frames over ``num_frames`` frames.

    The last window always ends at the last frame (an extra window is added when the stride does not land
    there); a video shorter than one window has a single window at frame 0.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be at least 1, got window {window}, stride {stride}")
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


def window_frames(start: int, num_frames: int, window: int, clip_frames: int) -> np.ndarray:
    """The ``clip_frames`` frame indices taken evenly over the window at ``start`` (clamped to the video)."""
    offsets = (np.arange(clip_frames, dtype=np.int64) * window) // clip_frames
    return np.minimum(start + offsets, num_frames - 1)


def roi_resize(frames: torch.Tensor, roi_start: Sequence[float], roi_end: Sequence[float], size: int) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float (F, 3, size, size): bilinear resize of the source window [start, end) ([y, x]),
    half-pixel centres, edges clamped, no antialiasing, rounded to 8 bits: what the test pipeline's ROI resize
    computes."""
    import torch
    import torch.nn.functional as F

    f, h, w, _ = frames.shape
    dev = frames.device

    def axis(start: float, end: float, length: int) -> torch.Tensor:
        centres = start + (torch.arange(size, device=dev, dtype=torch.float64) + 0.5) * (end - start) / size
        return (2 * centres / length - 1).float()  # grid_sample's normalised coordinate (align_corners=False)

    gy, gx = axis(roi_start[0], roi_end[0], h), axis(roi_start[1], roi_end[1], w)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).expand(f, size, size, 2)
    x = frames.permute(0, 3, 1, 2).float()
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255)


def _normalised_centre_crop(frames: np.ndarray, input_size: int, device: torch.device) -> torch.Tensor:
    import torch

    from dali_pipelines.augment import MEAN, STD, test_view_rois  # numpy only

    (start, end), = test_view_rois(frames.shape[2], frames.shape[1], input_size, 1)
    x = roi_resize(torch.from_numpy(frames).to(device), start.tolist(), end.tolist(), input_size)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def _decode_plan(starts: Sequence[int], num_frames: int, window: int, clip_frames: int, per_batch: int):
    """What the windows at ``starts`` ask of a video's reader, ``per_batch`` windows a batch: each batch's frame
    indices (windows, clip_frames), each frame's 1 + the last batch that uses it (0: none), the frames each batch asks
    for and the first frame of the next request (-1: none)."""
    batches = [np.stack([window_frames(s, num_frames, window, clip_frames) for s in starts[i:i + per_batch]])
               for i in range(0, len(starts), per_batch)]
    # Frames are asked of the reader once each, in increasing order, and kept until the last batch that
    # uses them: a stream that cannot be skipped through is decoded from frame 0 again for a request that
    # goes back, and windows overlap from batch to batch.
    last_use = np.zeros(num_frames, np.int64)  # 1 + the last batch that uses a frame; 0: none
    for b, idx in enumerate(batches):
        last_use[idx] = b + 1
    asks, decoded_to = [], 0  # the frames each batch asks for; those before decoded_to were asked
    for idx in batches:
        asks.append(decoded_to + np.flatnonzero(last_use[decoded_to:int(idx.max()) + 1]))
        decoded_to = max(decoded_to, int(idx.max()) + 1)
    # the next request's first frame: the reader decodes ahead for it only where it goes on from this one
    then = [next((int(a[0]) for a in asks[b + 1:] if a.size), -1) for b in range(len(asks))]
    return batches, last_use, asks, then


# ---------------------------------------------------------------------------------------------------- extraction
def _probe_all(cfg, paths: Sequence[str], ctx, progress: bool) -> dict[int, Any]:
    """Every video's probe, the index's (``probe_videos``), in worker processes with DATA.VIDEO_TIMEOUT_S for each:
    position in ``paths`` -> its VideoInfo, or the reason it is unreadable."""
    from dali_pipelines.filelist import DataError
    from dali_pipelines.index import PROBE_OVERDUE, probe_videos
    from dali_pipelines.video_table import VideoInfo
    from evautil.progress import stderr_is_terminal, stderr_line
    from evautil.workers import WorkerTimeoutError, usable_cpus

    # every rank probes its share at once (the index is probed by one rank at a time): the ranks of a node share
    # its CPUs (torchrun says how many there are; without it, all ranks are taken to share this node)
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE") or ctx.world_size)
    workers = cfg.DATA.INDEX_WORKERS or max(1, usable_cpus() // ranks_here)
    results = probe_videos([(i, path, False) for i, path in enumerate(paths)], workers,
                           progress and stderr_is_terminal(), f"probing (rank {ctx.rank})",
                           log=stderr_line if progress else None, timeout_s=float(cfg.DATA.VIDEO_TIMEOUT_S))
    probed: dict[int, Any] = {}
    try:
        for i, info, reason in results:
            if info is not None:
                probed[i] = VideoInfo.from_record(info)
            elif reason and reason.startswith(PROBE_OVERDUE):
                probed[i] = f"{reason}; the limit is DATA.VIDEO_TIMEOUT_S, the next run tries it again"
            else:
                probed[i] = reason or "unreadable"
    except WorkerTimeoutError as e:  # every video hangs: the storage, not the videos
        raise DataError(f"probing the videos of rank {ctx.rank}: {e}. Check the storage (a larger "
                        "DATA.VIDEO_TIMEOUT_S waits longer, 0 for ever)") from e
    finally:
        results.close()  # ends the workers
    return probed


def extract_windows(cfg, model, paths: Sequence[str], store: FeatureStore, ctx, amp_dtype, *, window: int,
                    stride: int, per_batch: int, progress: bool) -> dict[str, int]:
    """The features of the windows of ``window`` frames every ``stride`` of each of ``paths`` (this rank's share),
    ``per_batch`` windows a forward pass: ``store.add(meta, features)`` per video (a row per window, with the
    windows' starts in frames and seconds in ``meta``), ``store.fail(path, reason)`` per video that cannot be read.
    Each probe, open and batch of windows has DATA.VIDEO_TIMEOUT_S. Returns the turns of the videos stored whose
    display matrix turns them (``{path: degrees}``, as their probe read them)."""
    import torch

    from dali_pipelines.filelist import DataError
    from dali_pipelines.pyav_io import MAX_HELD_PACKET_BYTES
    from dali_pipelines.pyav_open import BadVideoError
    from dali_pipelines.timed_reader import DecodeOverdue, OverdueStreak, TimedVideoReader
    from tools.inference import STILL_IMAGE, progress_bar, refuse_non_finite, view_outputs

    t, size = cfg.DATA.NUM_FRAMES, cfg.DATA.INPUT_SIZE
    # in worker processes with a time limit, as the views' index probes: a file whose read never returns (a hung
    # network file system) hung the whole extraction
    probed = _probe_all(cfg, paths, ctx, progress)
    limit_s = float(cfg.DATA.VIDEO_TIMEOUT_S)  # each request to a video's reader, as the clips' decodes
    # the videos in a row past it, counted as the loaders count theirs: only a video that decodes ends the streak
    overdue = OverdueStreak(limit_s)
    turned: dict[str, int] = {}
    for pos, path in enumerate(progress_bar(paths, len(paths), progress, f"features (rank {ctx.rank})", "video")):
        try:
            info = probed[pos]
            if isinstance(info, str):
                raise BadVideoError(info)
            if info.num_frames < 2:  # as the views refuse it: a still image (PNG, JPEG) opens as a one-frame video
                raise BadVideoError(STILL_IMAGE)
            starts = window_starts(info.num_frames, window, stride)
            batches, last_use, asks, then = _decode_plan(starts, info.num_frames, window, t, per_batch)
            kept: dict[int, np.ndarray] = {}
            feats = []
            # One demux of the file for the frame times and every batch: demuxing it again for each batch made a
            # long video's cost grow with the square of its length.
            # Windows that leave no gap (stride <= window) need every GOP: one decode straight through, holding no
            # packets (runs that restarted at the last clean cut before each batch took three times as long on the
            # real clips); gaps between windows are skipped by seeking, and a batch that starts before the next
            # clean cut goes on from where the previous batch's runs stopped.
            with TimedVideoReader(path, limit_s, MAX_HELD_PACKET_BYTES if stride > window else 0) as reader:
                times = reader.frame_times()
                for b, idx in enumerate(batches):
                    union, inverse = np.unique(idx, return_inverse=True)  # each frame decoded once
                    if asks[b].size:
                        kept.update(zip(asks[b].tolist(), reader.frames(asks[b], then=then[b])))
                    rgb = np.stack([kept[f] for f in union.tolist()])
                    kept = {f: frame for f, frame in kept.items() if last_use[f] > b + 1}
                    frames = _normalised_centre_crop(rgb, size, ctx.device)
                    clips = frames[torch.from_numpy(inverse.reshape(idx.shape)).to(ctx.device)]  # (w, T, 3, S, S)
                    pooled, _ = view_outputs(model, clips[:, None], amp_dtype)
                    feats.append(pooled[:, 0].cpu().numpy())
        except (BadVideoError, OSError, ValueError) as error:
            reason = str(error)
            if isinstance(error, DecodeOverdue):
                try:
                    reason = overdue.left_out("decode", path)
                except RuntimeError as e:  # every video hangs: the storage, not the videos
                    raise DataError(f"decoding the windows of rank {ctx.rank}: {e}") from None
            store.fail(path, reason)
            continue
        overdue.answered()
        feats = np.concatenate(feats)
        # outside the try, whose ValueError would list the video as unreadable
        refuse_non_finite(torch.from_numpy(feats), [path] * len(feats), "features", amp_dtype,
                          NonFiniteFeaturesError)
        fps = info.fps if info.fps > 0 else None
        # the frames' own timestamps: start / fps, an average rate, put a window after a gap (dropped frames, a
        # variable rate) at the wrong time, the error growing along the video
        if times is not None and len(times) == info.num_frames:
            seconds = [round(float(times[s]), 6) for s in starts]
        else:
            seconds = [round(s / fps, 6) for s in starts] if fps else None
        store.add({"path": path, "mode": "windows", "num_frames": info.num_frames, "fps": fps, "window": window,
                   "stride": stride, "clip_frames": t, "starts_frames": starts, "starts_seconds": seconds},
                  feats)
        if info.rotation:
            turned[path] = info.rotation
    return turned
