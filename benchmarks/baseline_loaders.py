"""CPU reference loaders: the original EVA video data pipeline (mmaction2-style, SPEC.md section 3) rebuilt as a
torch ``Dataset`` + ``DataLoader(num_workers=N)``, so that our DALI loader can be measured against it on the same
clips and the same cores.

Per training clip, in a worker process (as the original):
  1. TSN sampling ``SampleFrames(clip_len=1, num_clips=T)``: ``i*avg + randint(avg)``, ``avg = n // T``;
  2. decode of the sampled frames only (``pyav``: PyAV, one thread per worker, decoding only the GOPs that hold a
     sampled frame; ``decord``: ``decord.VideoReader(num_threads=1).get_batch``, the original's decoder);
  3. resize the short side to 256, bilinear without antialiasing (the original uses cv2 INTER_LINEAR; cv2 is not
     a dependency here, so this is ``torch.nn.functional.interpolate(bilinear, antialias=False)`` on the whole clip,
     rounded back to uint8 like cv2's uint8 output);
  4. ``MultiScaleCrop(224, scales=(1, .875, .75, .66), max_wh_scale_gap=1, num_fixed_crops=5)``, one window per clip;
  5. resize to 224x224 (bilinear, aspect ratio not kept);
  6. horizontal flip with p 0.5 per clip;
  7. colour jitter with p 0.8 per clip, then a fresh ``torchvision ColorJitter(0.4, 0.4, 0.2, 0.1)`` draw **per
     frame** on a PIL image (the original's per-frame behaviour and cost);
  8. grayscale with p 0.2 per clip (PIL ``convert('L')`` replicated to 3 channels);
  9. normalise with the ImageNet mean/std x 255 to float32, ``(T, 3, 224, 224)``.

Test mode (multi-view): ``num_clips`` TSN clips per video decoded in one pass (each frame once), short side resized
to 224, three 224 crops along the long side (left, right, centre, as the original's ThreeCrop), normalised;
``(V, T, 3, 224, 224)`` with V = 3 * num_clips ordered [crop][clip]. Clip placement follows the original's
multi-clip test (independent jittered TSN samplings) or, with ``test_sampling='uniform'``, evenly interleaved
deterministic clips.

Randomness follows the original: python ``random`` and ``np.random`` (seeded per worker) and torch's RNG inside
torchvision's ColorJitter.
"""

from __future__ import annotations

import os
import random
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "MEAN", "STD", "original_tsn_indices", "original_multiview_indices", "decode_pyav", "decode_decord",
    "decord_available", "OriginalTrainTransform", "OriginalTestTransform", "OriginalVideoDataset",
    "build_baseline_loader",
]

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Sampling (the original's SampleFrames)
# ---------------------------------------------------------------------------------------------------------------
def original_tsn_indices(total: int, num_segments: int) -> np.ndarray:
    """``SampleFrames(clip_len=1, frame_interval=1, num_clips=T)`` with ``np.random`` (training mode)."""
    if total < 1:
        raise ValueError(f"video has no frames (total={total})")
    avg = total // num_segments
    if avg > 0:
        idx = np.arange(num_segments) * avg + np.random.randint(avg, size=num_segments)
    else:
        idx = np.around(np.arange(num_segments) * (total / num_segments))
    return idx.astype(np.int64) % total


def original_multiview_indices(total: int, num_segments: int, num_clips: int, mode: str = "random") -> np.ndarray:
    """``(num_clips, T)`` indices: 'random' = the original's independent jittered clips; 'uniform' = clip k takes
    ``floor((i + (k + .5)/num_clips) * total / T)`` in segment i (deterministic, interleaved)."""
    if mode == "random":
        return np.stack([original_tsn_indices(total, num_segments) for _ in range(num_clips)])
    if mode == "uniform":
        i = np.arange(num_segments)[None, :]
        k = np.arange(num_clips)[:, None]
        return ((2 * (i * num_clips + k) + 1) * total) // (2 * num_clips * num_segments)
    raise ValueError(f"test sampling {mode!r} is not 'random' or 'uniform'")


# ---------------------------------------------------------------------------------------------------------------
# Decoders
# ---------------------------------------------------------------------------------------------------------------
def decode_pyav(path: str, indices: Sequence[int], threads: int = 1) -> tuple[np.ndarray, int]:
    """Decode frames ``indices`` (presentation order, any order, duplicates allowed) of ``path`` with PyAV.

    Only the GOPs (keyframe-to-keyframe packet runs) that contain a requested frame are decoded, each once, and only
    the requested frames are converted to RGB. This assumes closed GOPs (frames of a GOP are presented before the
    next keyframe), which holds for x264/libvpx output with default settings and for re-encoded Kinetics.

    Returns ``(frames uint8 (len(indices), H, W, 3), number of frames the decoder produced)``.
    """
    import av

    wanted = np.asarray(indices, dtype=np.int64)
    with av.open(path) as container:
        stream = container.streams.video[0]
        cc = stream.codec_context
        cc.thread_count = max(int(threads), 1)
        if threads and threads > 1:
            cc.thread_type = "AUTO"
        # Demux only (cheap): packets in decode order and where each GOP starts.
        packets = [p for p in container.demux(stream) if p.size > 0]
        if not packets:
            raise ValueError(f"{path}: no video packets")
        key_pos = [i for i, p in enumerate(packets) if p.is_keyframe] or [0]
        if key_pos[0] != 0:
            key_pos = [0] + key_pos
        bounds = key_pos + [len(packets)]
        n = len(packets)
        if wanted.min() < 0 or wanted.max() >= n:
            raise ValueError(f"{path}: frame index out of range [0, {n}): {wanted.min()}..{wanted.max()}")
        gop_of = np.searchsorted(np.asarray(key_pos), wanted, side="right") - 1
        need = sorted(set(gop_of.tolist()))
        out: dict[int, np.ndarray] = {}
        want_set = set(wanted.tolist())
        decoded = 0
        g = 0
        while g < len(need):
            # A run of consecutive needed GOPs is decoded in one go, then the decoder is drained and reset.
            run_end = g
            while run_end + 1 < len(need) and need[run_end + 1] == need[run_end] + 1:
                run_end += 1
            first, last = bounds[need[g]], bounds[need[run_end] + 1]
            frames = []
            for p in packets[first:last]:
                frames.extend(cc.decode(p))
            frames.extend(cc.decode(None))
            cc.flush_buffers()
            decoded += len(frames)
            # The decoder emits frames in presentation order (it reorders B-frames itself), which is the frame
            # numbering used everywhere in this project.
            for k, fr in enumerate(frames):
                idx = first + k
                if idx in want_set and idx not in out:
                    out[idx] = fr.to_ndarray(format="rgb24")
            g = run_end + 1
    missing = [int(i) for i in want_set if i not in out]
    if missing:
        raise ValueError(f"{path}: decoder returned no frame for indices {missing[:5]}")
    return np.stack([out[int(i)] for i in wanted]), decoded


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
        return True
    except ImportError:
        return False


def decode_decord(path: str, indices: Sequence[int], threads: int = 1) -> tuple[np.ndarray, int]:
    """The original's decode: ``decord.VideoReader(path, num_threads=1)`` and a batch read of the indices.
    decord does not say how many frames it decoded, so the count returned is 0, "not known": the requested frames
    would be shown as decoded frames/s beside PyAV's count, which includes the frames decoded to reach them."""
    import decord
    vr = decord.VideoReader(path, num_threads=threads)
    uniq = sorted(set(int(i) for i in indices))
    frames = vr.get_batch(uniq).asnumpy()
    pos = {v: k for k, v in enumerate(uniq)}
    return frames[[pos[int(i)] for i in indices]], 0


_DECODERS = {"pyav": decode_pyav, "decord": decode_decord}


# ---------------------------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------------------------
def _resize_uint8(clip: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear resize of a uint8 ``(T, 3, H, W)`` clip without antialiasing, rounded back to uint8 (as cv2's
    INTER_LINEAR on uint8 images)."""
    if clip.shape[-2:] == (h, w):
        return clip
    out = F.interpolate(clip.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _short_side_size(h: int, w: int, short: int) -> tuple[int, int]:
    """mmcv ``rescale_size`` for ``Resize(scale=(-1, short))``: new (h, w) = int(x * s + 0.5)."""
    s = short / min(h, w)
    return int(h * s + 0.5), int(w * s + 0.5)


def _normalize(clip: torch.Tensor) -> torch.Tensor:
    mean = torch.from_numpy(MEAN).view(1, 3, 1, 1)
    inv_std = torch.from_numpy(1.0 / STD).view(1, 3, 1, 1)
    return (clip.float() - mean) * inv_std


class OriginalTrainTransform:
    """Steps 3-9 of the module docstring on uint8 ``(T, H, W, 3)`` RGB frames -> float32 ``(T, 3, S, S)``."""

    def __init__(self, input_size: int = 224, scales=(1.0, 0.875, 0.75, 0.66), flip: float = 0.5,
                 color_jitter: float = 0.8, gray: float = 0.2):
        from torchvision.transforms import ColorJitter
        self.size = input_size
        self.short = int(256 / 224 * input_size)
        self.scales = scales
        self.flip, self.cj, self.gray = flip, color_jitter, gray
        self.jitter = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)

    def multiscale_crop(self, img_h: int, img_w: int) -> tuple[int, int, int, int]:
        """The original's MultiScaleCrop window (x0, y0, w, h) with python ``random``."""
        base = min(img_h, img_w)
        sizes = [int(base * s) for s in self.scales]
        cands = [[w, h] for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= 1]
        crop = random.choice(cands)
        for i in range(2):
            if abs(crop[i] - self.size) < 3:
                crop[i] = self.size
        cw, ch = crop
        ws, hs = (img_w - cw) // 4, (img_h - ch) // 4
        x0, y0 = random.choice([(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)])
        return x0, y0, cw, ch

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        from PIL import Image
        clip = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8
        h, w = _short_side_size(clip.shape[2], clip.shape[3], self.short)
        clip = _resize_uint8(clip, h, w)
        x0, y0, cw, ch = self.multiscale_crop(h, w)
        clip = _resize_uint8(clip[:, :, y0:y0 + ch, x0:x0 + cw], self.size, self.size)
        if np.random.rand() < self.flip:
            clip = clip.flip(-1)
        do_cj = random.random() < self.cj
        do_gray = random.random() < self.gray
        if do_cj or do_gray:
            imgs = [Image.fromarray(f.permute(1, 2, 0).contiguous().numpy()) for f in clip]
            if do_cj:
                imgs = [self.jitter(im) for im in imgs]  # new factors and op order per frame (the original)
            if do_gray:
                imgs = [im.convert("L").convert("RGB") for im in imgs]
            clip = torch.from_numpy(np.stack([np.asarray(im) for im in imgs])).permute(0, 3, 1, 2)
        return _normalize(clip)


class OriginalTestTransform:
    """Multi-view test transform: short side -> ``input_size``, three crops along the long side (left, right,
    centre), normalise. ``(N*T, H, W, 3)`` frames of ``num_clips`` clips -> ``(3*N, T, 3, S, S)``."""

    def __init__(self, input_size: int = 224, num_crop: int = 3):
        self.size = input_size
        self.num_crop = num_crop

    def __call__(self, frames: np.ndarray, num_clips: int) -> torch.Tensor:
        clip = torch.from_numpy(frames).permute(0, 3, 1, 2)
        s = self.size
        short = s if self.num_crop == 3 else int(256 / 224 * s)
        h, w = _short_side_size(clip.shape[2], clip.shape[3], short)
        clip = _resize_uint8(clip, h, w)
        if self.num_crop == 3:
            long_w = w >= h
            step = ((w if long_w else h) - s) // 2
            offs = [0, 2 * step, step]  # the original's ThreeCrop order: left, right, middle
            crops = [clip[:, :, :, o:o + s] if long_w else clip[:, :, o:o + s, :] for o in offs]
            crops = [c[:, :, (c.shape[2] - s) // 2:(c.shape[2] - s) // 2 + s, (c.shape[3] - s) // 2:
                       (c.shape[3] - s) // 2 + s] for c in crops]
        else:
            top, left = (h - s) // 2, (w - s) // 2
            crops = [clip[:, :, top:top + s, left:left + s]]
        out = torch.stack([_normalize(c) for c in crops])  # (C, N*T, 3, S, S)
        t = frames.shape[0] // num_clips
        return out.reshape(len(crops) * num_clips, t, 3, s, s)  # [crop][clip]


# ---------------------------------------------------------------------------------------------------------------
# Dataset and loader
# ---------------------------------------------------------------------------------------------------------------
class OriginalVideoDataset(torch.utils.data.Dataset):
    """The original per-clip pipeline over ``clips = [(path, label, num_frames)]``.

    ``length`` (default: one pass) lets a benchmark draw more samples than clips (index ``i`` reads clip
    ``i % len(clips)``), so that a persistent DataLoader never ends an epoch inside a measurement.
    Items are dicts ``{'video', 'label', 'index', 'decoded'}`` where ``decoded`` counts the frames the decoder
    produced for the item (including frames decoded only to reach a sampled one; 0 with decord, which does not
    say).
    """

    def __init__(self, clips: Sequence[tuple[str, int, int]], mode: str = "train", num_frames: int = 16,
                 input_size: int = 224, decoder: str = "pyav", num_clips: int = 4, num_crop: int = 3,
                 test_sampling: str = "random", length: int | None = None, decode_threads: int = 1):
        if mode not in ("train", "test"):
            raise ValueError(f"mode {mode!r} is not 'train' or 'test'")
        if decoder not in _DECODERS:
            raise ValueError(f"decoder {decoder!r} is not one of {sorted(_DECODERS)}")
        if decoder == "decord" and not decord_available():
            raise ImportError("decoder 'decord' requested but the decord package is not installed")
        if not clips:
            raise ValueError("no clips given")
        self.clips = list(clips)
        self.mode, self.T, self.decoder = mode, num_frames, decoder
        self.num_clips, self.test_sampling = num_clips, test_sampling
        self.decode_threads = decode_threads
        self.length = length or len(self.clips)
        self.train_tf = OriginalTrainTransform(input_size)
        self.test_tf = OriginalTestTransform(input_size, num_crop)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        path, label, total = self.clips[i % len(self.clips)]
        if self.mode == "train":
            idx = original_tsn_indices(total, self.T)
        else:
            idx = original_multiview_indices(total, self.T, self.num_clips, self.test_sampling).reshape(-1)
        frames, decoded = _DECODERS[self.decoder](path, idx, self.decode_threads)
        if self.mode == "train":
            video = self.train_tf(frames)
        else:
            video = self.test_tf(frames, self.num_clips)
        return {"video": video, "label": torch.tensor(label, dtype=torch.long), "index": i, "decoded": decoded}


def _seed_worker(worker_id: int) -> None:
    # A scheduler's SIGTERM (or `timeout`'s) reaches every process of the group: a worker it killed made the
    # DataLoader raise "worker ... is killed by signal" over the main process's `stopped:` line (a traceback, exit
    # code 1). As the project's own workers, these leave the stop to the main process, which ends them.
    from evautil.workers import worker_setup

    worker_setup(os.getppid())
    # torch seeds each worker's torch RNG (base_seed + id); python random and numpy are seeded from it so that
    # workers draw different crops, as the original's per-rank seeding does.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_baseline_loader(clips: Sequence[tuple[str, int, int]], mode: str = "train", batch_size: int = 8,
                          num_workers: int = 2, decoder: str = "pyav", num_frames: int = 16, input_size: int = 224,
                          num_clips: int = 4, num_crop: int = 3, test_sampling: str = "random",
                          length: int | None = None, seed: int = 0, prefetch_factor: int = 2,
                          pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over :class:`OriginalVideoDataset` with ``num_workers`` persistent worker processes.

    Batches: ``video`` float32 (B, T, 3, S, S) in train mode, (B, V, T, 3, S, S) in test mode; ``label`` (B,);
    ``decoded`` (B,) decoded-frame counts.
    """
    ds = OriginalVideoDataset(clips, mode=mode, num_frames=num_frames, input_size=input_size, decoder=decoder,
                              num_clips=num_clips, num_crop=num_crop, test_sampling=test_sampling, length=length)
    g = torch.Generator()
    g.manual_seed(seed)
    kw = {}
    if num_workers > 0:
        kw = {"persistent_workers": True, "prefetch_factor": prefetch_factor}
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                       drop_last=True, worker_init_fn=_seed_worker, generator=g,
                                       pin_memory=pin_memory, **kw)
