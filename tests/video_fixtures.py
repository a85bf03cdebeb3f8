"""Helpers for the loader/pipeline tests: tiny clips whose frames are easy to tell apart, lists, configs, and a
numpy reference of DALI's ROI resize."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from benchmarks.nvdec_parity import FrameMatcher, best_match  # noqa: F401  (one home: the parity benchmark)
from configs.defaults import get_cfg_defaults
from dali_pipelines.pyav_encode import write_video


def reference_clips(folder: Path, names) -> list[Path]:
    """The named clips of the reference folder. A missing one fails the test by name: a partial reference folder
    must not quietly shrink what a test covers (the folder itself missing is conftest's case)."""
    import pytest

    missing = [n for n in names if not (Path(folder) / n).is_file()]
    if missing:
        pytest.fail(f"reference clips missing from {folder}: {', '.join(missing)}", pytrace=False)
    return [Path(folder) / n for n in names]


def count_demuxes(monkeypatch) -> list[str]:
    """The file name of every demux (whole or partial) of a container opened through ``av.open`` from now on."""
    import av

    demuxes: list[str] = []
    real_open = av.open

    class Counted:
        def __init__(self, container, name):
            self._container, self._name = container, name

        def __getattr__(self, attr):
            return getattr(self._container, attr)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._container.close()

        def demux(self, *args, **kwargs):
            demuxes.append(self._name)
            return self._container.demux(*args, **kwargs)

    def counted_open(src, *args, **kwargs):
        return Counted(real_open(src, *args, **kwargs), getattr(src, "name", src))

    monkeypatch.setattr(av, "open", counted_open)
    return demuxes


def cuts_some_file(pack: bool, loader, rows) -> bool:
    """Whether file reads with ``pack`` (a route's GOP-cut setting) cut at least one of these rows' videos (fewer
    bytes, renumbered frames): a check that a GOP cut under test is really in use for the test's clips."""
    from dali_pipelines.host_decode import read_source

    samples = [loader.sample(r) for r in rows]
    cuts = ((read_source(s.video.path, s.frames, 0, 0, pack), s) for s in samples)
    return any(enc.size < os.path.getsize(s.video.path) and not np.array_equal(frames, s.frames)
               for (enc, frames), s in cuts)


def mark_rotated(path: str) -> None:
    """Mark an MP4 file's video track as displayed rotated by 90 degrees, the way a phone records portrait video: the
    track header's display matrix is rewritten in place, the coded frames stay as they are. (PyAV writes no display
    matrix itself, and the project does not depend on an ffmpeg binary.)"""
    data = bytearray(Path(path).read_bytes())
    at = data.find(b"tkhd")
    assert at > 0, f"{path}: no track header (tkhd) box"
    # After the box type: version (1 byte), flags (3), then times, ids, layer... the 3x3 matrix sits 40 bytes on in
    # a version-0 header, 52 in a version-1 one (64-bit times); 16.16 fixed point, the last column 2.30.
    offset = at + 4 + (40 if data[at + 4] == 0 else 52)
    identity = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    assert data[offset:offset + 36] == identity, f"{path}: the track's display matrix is not the identity"
    data[offset:offset + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    Path(path).write_bytes(bytes(data))


def pattern_frames(num_frames: int, width: int = 96, height: int = 72, seed: int = 0) -> np.ndarray:
    """Frames that differ strongly from each other (a bright box moving on a 2-D path, a frame-dependent gradient)
    and are not left-right symmetric, so flips and crop offsets are visible."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width * 200, yy / height * 120 + 40, (xx + yy) / (width + height) * 80], -1)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        f = base.copy()
        f[..., 2] += 100 * (0.5 + 0.5 * np.sin(i * 0.9))
        cx, cy = (7 * i + rng.integers(3)) % (width - 16), (5 * i) % (height - 16)
        f[cy:cy + 16, cx:cx + 16] = (250, 240, 20)
        frames[i] = np.clip(f, 0, 255)
    return frames


def make_clip_dataset(root: str, counts, codec: str = "vp9", size=(96, 72), list_name: str = "list.txt",
                      num_classes: int = 3, gop: int | None = 8) -> str:
    """Write one clip per entry of ``counts`` (frame counts) under ``root/videos`` and a list; returns the list
    path. Labels cycle over ``num_classes``; every third file name contains a space."""
    os.makedirs(os.path.join(root, "videos"), exist_ok=True)
    ext = {"vp9": ".webm", "vp8": ".webm", "h264": ".mp4", "mjpeg": ".avi"}[codec]
    lines = []
    for i, n in enumerate(counts):
        rel = f"videos/clip {i}{ext}" if i % 3 == 0 else f"videos/clip_{i}{ext}"
        write_video(os.path.join(root, rel), pattern_frames(n, size[0], size[1], seed=i), codec=codec, gop=gop)
        lines.append(f"{rel} {i % num_classes}")
    list_path = os.path.join(root, list_name)
    with open(list_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return list_path


def small_cfg(root: str, train_list: str = "", val_list: str = "", **overrides):
    """A mutable config for tiny CPU runs."""
    cfg = get_cfg_defaults()
    cfg.DATA.ROOT = root
    cfg.DATA.TRAIN_FILE = train_list
    cfg.DATA.VAL_FILE = val_list
    cfg.DATA.NUM_CLASSES = 3
    cfg.DATA.INPUT_SIZE = 32
    cfg.DATA.NUM_FRAMES = 4
    cfg.DATA.NUM_THREADS = 1
    cfg.DATA.NUM_WORKERS = 1
    cfg.DATA.INDEX_WORKERS = 1
    cfg.DATA.PREFETCH = 2
    cfg.DATA.DECODE_DEVICE = "cpu"
    cfg.TRAIN.BATCH_SIZE = 2
    cfg.TEST.BATCH_SIZE = 2
    cfg.SEED = 7
    for key, value in overrides.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return cfg


def roi_resize_ref(frames: np.ndarray, roi_start, roi_end, size: int) -> np.ndarray:
    """Bilinear resize (no antialias, half-pixel centres, edge clamp) of the source window [roi_start, roi_end)
    ([y, x] in source pixels) of uint8 (F, H, W, 3) frames to (F, size, size, 3) float32."""
    frames = frames.astype(np.float32)
    _, h, w, _ = frames.shape

    def axis(start, end, n, length):
        c = start + (np.arange(size) + 0.5) * (end - start) / size - 0.5
        c = np.clip(c, 0, length - 1)
        i0 = np.floor(c).astype(int)
        i1 = np.minimum(i0 + 1, length - 1)
        return i0, i1, (c - i0).astype(np.float32)

    y0, y1, wy = axis(roi_start[0], roi_end[0], size, h)
    x0, x1, wx = axis(roi_start[1], roi_end[1], size, w)
    rows = frames[:, y0] * (1 - wy)[None, :, None, None] + frames[:, y1] * wy[None, :, None, None]
    return rows[:, :, x0] * (1 - wx)[None, None, :, None] + rows[:, :, x1] * wx[None, None, :, None]


MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def denormalize(video) -> np.ndarray:
    """(..., 3, S, S) normalised tensor -> (..., S, S, 3) float32 pixel values."""
    v = np.asarray(video.float().cpu() if hasattr(video, "cpu") else video, np.float32)
    v = np.moveaxis(v, -3, -1)
    return v * STD + MEAN


def pixels_by_row(loader) -> dict[int, np.ndarray]:
    """Every clip a loader yields as pixel values (:func:`denormalize`), by its list row; the loader is closed."""
    out = {}
    try:
        for batch in loader:
            for video, row in zip(batch["video"], batch["index"].tolist()):
                out[row] = denormalize(video)
    finally:
        loader.close()
    return out


def synthetic_dataset(tmp_path_factory, name: str, train_per_class: int, val_per_class: int, num_frames: int = 12,
                      size: tuple[int, int] = (48, 32)) -> Path:
    """A small motion dataset (tools/synthetic.py) in a fresh temporary folder, for end-to-end runs."""
    from tools.synthetic import make_synthetic_dataset

    out = tmp_path_factory.mktemp(name)
    make_synthetic_dataset(str(out), train_per_class=train_per_class, val_per_class=val_per_class,
                           num_frames=num_frames, size=size, workers=2, progress=False)
    return out
