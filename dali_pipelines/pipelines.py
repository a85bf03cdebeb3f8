"""DALI graphs: decode the sampled frames and augment them, for training and multi-view testing.

Everything random is decided in Python (``augment.py`` / ``sampling.py``) and enters the graph through one
``fn.external_source`` as per-sample tensors; the graph itself is deterministic. The external source yields, per
sample, either the encoded file bytes plus the frame indices to decode (``fn.decoders.video`` on the ``mixed``
NVDEC backend or the ``cpu`` backend for VP8/VP9/MJPEG) or, on the PyAV route, frames that are already decoded.
Everything after decoding is the same graph for all routes.

Input names (the order of the external source's outputs) are given by :func:`train_input_names` and
:func:`test_input_names`; the loader's feeder produces exactly these.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from nvidia.dali import fn, pipeline_def, types

from .augment import MEAN, STD
from .color_jitter import jitter_frames

__all__ = [
    "train_input_names", "test_input_names", "train_pipeline", "test_pipeline", "build_decode_pipeline",
    "decode_with_dali", "one_batch_source",
]

_DTYPES = {"float16": types.FLOAT16, "float32": types.FLOAT}

# DALI type, ndim and layout of each possible external-source output.
_INPUT_SPECS = {
    "encoded": (types.UINT8, 1, ""),
    "frames": (types.INT32, 1, ""),
    "video": (types.UINT8, 4, "FHWC"),
    "roi_start": (types.FLOAT, 1, ""),
    "roi_end": (types.FLOAT, 1, ""),
    "mirror": (types.INT32, 0, ""),
    "brightness": (types.FLOAT, 0, ""),
    "contrast": (types.FLOAT, 0, ""),
    "saturation": (types.FLOAT, 0, ""),
    "hue": (types.FLOAT, 0, ""),
    "new_order": (types.INT32, 1, ""),
    "color_ops": (types.INT32, 1, ""),
    "index": (types.INT32, 0, ""),
}


def _spec(name: str, per_frame_jitter: bool = False):
    base = name.split("@")[0]
    dtype, ndim, layout = _INPUT_SPECS[base]
    if per_frame_jitter and base in ("brightness", "contrast", "saturation", "hue"):
        ndim = 1
    return dtype, ndim, layout


def train_input_names(predecoded: bool) -> list[str]:
    """External-source outputs of the training graph, in order."""
    src = ["video"] if predecoded else ["encoded", "frames"]
    return src + ["roi_start", "roi_end", "mirror", "brightness", "contrast", "saturation", "hue", "color_ops",
                  "index"]


def test_input_names(predecoded: bool, num_crop: int) -> list[str]:
    """External-source outputs of the test graph, in order (one ROI pair per spatial crop)."""
    src = ["video"] if predecoded else ["encoded", "frames"]
    rois = [f"{k}@{c}" for c in range(num_crop) for k in ("roi_start", "roi_end")]
    return src + rois + ["new_order", "index"]


def _external_inputs(source, names: Sequence[str], per_frame_jitter: bool = False) -> dict:
    specs = [_spec(n, per_frame_jitter) for n in names]
    outs = fn.external_source(source=source, num_outputs=len(names), batch=True,
                              dtype=[s[0] for s in specs], ndim=[s[1] for s in specs],
                              layout=[s[2] or None for s in specs])
    return dict(zip(names, outs))


def _decode(inputs: dict, decode_device: str):
    """Frames (F, H, W, 3) uint8 FHWC, on the GPU when ``decode_device == 'mixed'``."""
    if "video" in inputs:  # PyAV route: already decoded on the host
        video = inputs["video"]
        return video.gpu() if decode_device == "mixed" else video
    # pad_mode='edge': should an index reach past what the decoder finds (frame counts from the index can exceed
    # the decodable frames of a damaged tail), repeat the last real frame rather than return black frames.
    return fn.decoders.video(inputs["encoded"], device=decode_device, frames=inputs["frames"], pad_mode="edge")


def _roi_resize(video, roi_start, roi_end, size: int):
    # Crop and resize in one pass: the ROI is in source pixels ([y, x]); no antialias and bilinear filtering, as
    # the original's cv2 INTER_LINEAR resizes.
    return fn.resize(video, roi_start=roi_start, roi_end=roi_end, roi_relative=False, size=[size, size],
                     antialias=False, interp_type=types.INTERP_LINEAR)


def _normalize(video, dtype: str, mirror=None):
    # Flip, (x - mean) / std, the output type and the layout change (FHWC -> FCHW) in one kernel.
    kwargs = {} if mirror is None else {"mirror": mirror}
    return fn.crop_mirror_normalize(video, dtype=_DTYPES[dtype], output_layout="FCHW", mean=list(MEAN),
                                    std=list(STD), **kwargs)


@pipeline_def(enable_conditionals=True)  # the colour program runs per sample (color_jitter.py)
def train_pipeline(source, *, input_size: int, decode_device: str, predecoded: bool, dtype: str,
                   per_frame_jitter: bool = False):
    """Training graph: decode T sampled frames -> MultiScaleCrop+resize (one ROI resize) -> colour jitter /
    grayscale -> flip + normalise -> (T, 3, S, S). Outputs: video, index."""
    names = train_input_names(predecoded)
    x = _external_inputs(source, names, per_frame_jitter)
    video = _decode(x, decode_device)
    video = _roi_resize(video, x["roi_start"], x["roi_end"], input_size)
    video = jitter_frames(video, x["color_ops"], x["brightness"], x["contrast"], x["saturation"], x["hue"],
                          per_frame=per_frame_jitter)
    video = _normalize(video, dtype, mirror=x["mirror"])
    return video, x["index"]


@pipeline_def
def test_pipeline(source, *, input_size: int, num_crop: int, decode_device: str, predecoded: bool, dtype: str):
    """Multi-view test graph.

    The sorted union of all clips' frame indices is decoded once (U frames); each spatial crop is one ROI resize
    of those U frames; the crops are concatenated along the frame axis and one per-sample gather
    (``sequence_rearrange`` with ``new_order = crop * U + position of the clip's frame in the union``) lays out
    the V*T output frames ordered [crop][clip][t]. Outputs: video (V*T, 3, S, S), index.
    """
    names = test_input_names(predecoded, num_crop)
    x = _external_inputs(source, names)
    video = _decode(x, decode_device)
    crops = [_roi_resize(video, x[f"roi_start@{c}"], x[f"roi_end@{c}"], input_size) for c in range(num_crop)]
    video = crops[0] if num_crop == 1 else fn.cat(*crops, axis=0)
    video = fn.sequence_rearrange(video, new_order=x["new_order"])
    video = _normalize(video, dtype)
    return video, x["index"]


def one_batch_source(batch):
    """An ``external_source`` callback that hands over ``batch`` once and then ends the epoch."""
    fed = {"done": False}

    def source():
        if fed["done"]:
            raise StopIteration
        fed["done"] = True
        return batch

    return source


@pipeline_def
def _decode_only_pipeline(source, *, decode_device: str):
    enc, frames = fn.external_source(source=source, num_outputs=2, batch=True, dtype=[types.UINT8, types.INT32],
                                     ndim=[1, 1])
    return fn.decoders.video(enc, device=decode_device, frames=frames, pad_mode="edge")


def build_decode_pipeline(paths: Sequence[str], indices: Sequence[Sequence[int]], device: str = "cpu",
                          device_id: int | None = None, num_threads: int = 1):
    """A built pipeline whose single run decodes ``indices[k]`` of ``paths[k]`` (no augmentation), for exactness
    tests and for probing which video broke a pipeline. ``device``: 'cpu' or 'mixed'."""
    if len(paths) != len(indices):
        raise ValueError(f"{len(paths)} paths but {len(indices)} index lists")
    source = one_batch_source(([np.fromfile(p, dtype=np.uint8) for p in paths],
                               [np.asarray(i, dtype=np.int32) for i in indices]))
    if device == "mixed" and device_id is None:
        device_id = 0
    pipe = _decode_only_pipeline(source, decode_device=device, batch_size=max(1, len(paths)),
                                 num_threads=num_threads, device_id=device_id if device == "mixed" else None,
                                 prefetch_queue_depth=1)
    pipe.build()
    return pipe


def decode_with_dali(paths: Sequence[str], indices: Sequence[Sequence[int]], device: str = "cpu",
                     device_id: int | None = None) -> list[np.ndarray]:
    """Decode ``indices[k]`` of ``paths[k]`` with ``fn.decoders.video``; uint8 RGB arrays (F, H, W, 3) on the host.
    Raises RuntimeError (DALI's) when a video cannot be decoded."""
    pipe = build_decode_pipeline(paths, indices, device, device_id)
    try:
        (out,) = pipe.run()
        if device == "mixed":
            out = out.as_cpu()
        return [np.array(out[i]) for i in range(len(out))]
    finally:
        del pipe
