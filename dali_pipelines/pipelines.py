"""DALI graphs: decode the sampled frames and augment them, for training and multi-view testing.

Everything random is decided in Python (``augment.py`` / ``sampling.py`` via ``draw.py``) and enters the graph
through one ``fn.external_source`` as per-sample tensors; the graph itself is deterministic.

The graph receives one typed record per sample (``graph_records.py``: :class:`SampleRecord`, its source and its
augmentation parameters). The external source's outputs (names, types, dimensions, layouts, order) are derived
from the records' declared fields by :func:`record_layout`, the same fields ``graph_records.batch_columns`` turns a
batch of records into, so the two cannot drift.

A sample's *decode route* says which decoder takes it (:data:`ROUTES`): ``nvdec`` (DALI's ``mixed`` decoder, in
the graph), ``dali_cpu`` (DALI's CPU decoder, VP8/VP9/MJPEG) or ``pyav``. Both CPU routes decode in the decode
worker processes (``host_decode.py``) and hand the graph the frames. Everything after decoding is the same for all
routes. Each route belongs to a graph (``RouteSpec.graph``): NVDEC has its own, the two CPU routes share the
``host`` graph, which takes :class:`DecodedSource` records from both, so a mixed batch is augmented once and
leaves the graph in its planned order.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
from nvidia.dali import fn, pipeline_def, types

from .augment import MEAN, STD
from .color_jitter import jitter_frames
from .graph_records import DecodedSource, EncodedSource, GraphInput, SampleRecord, TestParams, TrainParams, graph_fields
from .pyav_open import BadVideoError
from .routing import DALI_CPU, NVDEC, PYAV

__all__ = [
    "ROUTES", "graph_of", "graphs_serving", "graph_source", "record_layout",
    "train_pipeline", "test_pipeline", "convert_graph_code", "build_decode_pipeline", "decode_with_dali",
    "decode_encoded_with_dali", "one_batch_source", "short_video_error", "dali_error_reason", "PAD_MODE",
    "HOST_POOL_THRESHOLD", "use_dali_host_pool",
]

logger = logging.getLogger(__name__)

# Host buffers above this size come from DALI's own memory pool instead of malloc. DALI's default (32 MiB, glibc's
# largest mmap threshold) sends a CPU graph's per-sample buffers (a 16 x 224 x 224 float plane is 3.2 MB) to
# malloc, which mapped and unmapped thousands of them in a short benchmark run, and the kernel zeroed fresh pages
# for operators' outputs. With the pool, the training graph's augmentation used less CPU per clip and a loader's
# peak memory fell about 3x (docs/PERFORMANCE.md, "DALI's host memory pool").
HOST_POOL_THRESHOLD = "2M"


def use_dali_host_pool() -> None:
    """Send DALI's host allocations above :data:`HOST_POOL_THRESHOLD` to its memory pool (its environment
    variable ``DALI_MALLOC_POOL_THRESHOLD``, read when DALI first allocates host memory). A value already in the
    environment is kept."""
    os.environ.setdefault("DALI_MALLOC_POOL_THRESHOLD", HOST_POOL_THRESHOLD)


use_dali_host_pool()

_DTYPES = {"float16": types.FLOAT16, "float32": types.FLOAT}
_DALI_TYPES = {np.dtype(np.uint8): types.UINT8, np.dtype(np.int32): types.INT32,
               np.dtype(np.float32): types.FLOAT, np.dtype(np.bool_): types.BOOL}


@dataclass(frozen=True)
class RouteSpec:
    """How one decode route enters a graph: DALI's decoder backend ('mixed', 'cpu'; None when the frames come
    decoded), the source record it is fed, and the graph that serves it (routes of one graph share it)."""

    backend: str | None
    source: type
    graph: str


# How each route of routing.ROUTES (the names and their order live there) enters its graph. NVDEC decodes in its
# graph, onto the GPU, with its own decoder threads; both CPU routes decode in the worker processes
# (host_decode.py) and hand one graph the frames.
ROUTES = {
    NVDEC: RouteSpec(backend="mixed", source=EncodedSource, graph="nvdec"),
    DALI_CPU: RouteSpec(backend=None, source=DecodedSource, graph="host"),
    PYAV: RouteSpec(backend=None, source=DecodedSource, graph="host"),
}


def graph_of(route: str) -> str:
    """The graph that serves ``route``."""
    return _route_spec(route).graph


def graphs_serving(routes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The graphs that ``routes`` need, each with the routes it serves (in the given order)."""
    out: dict[str, tuple[str, ...]] = {}
    for r in routes:
        out[graph_of(r)] = out.get(graph_of(r), ()) + (r,)
    return out


def _route_spec(route: str) -> RouteSpec:
    if route not in ROUTES:
        raise ValueError(f"unknown decode route {route!r} (expected one of {', '.join(ROUTES)})")
    return ROUTES[route]


def _route_tuple(routes: Union[str, Sequence[str]]) -> tuple[str, ...]:
    routes = (routes,) if isinstance(routes, str) else tuple(dict.fromkeys(routes))
    for r in routes:
        _route_spec(r)
    if not routes or len({graph_of(r) for r in routes}) != 1:
        raise ValueError(f"routes {list(routes)} are not served by one graph")
    return routes


def graph_source(routes: Union[str, Sequence[str]]) -> type:
    """The source record type of a graph serving ``routes`` (the routes of one graph share it)."""
    kinds = {ROUTES[r].source for r in _route_tuple(routes)}
    if len(kinds) != 1:
        raise ValueError(f"routes {list(routes)} enter their graph with different records")
    return kinds.pop()


def record_layout(params: type, routes: Union[str, Sequence[str]], per_frame_jitter: bool = False
                  ) -> list[tuple[str, GraphInput]]:
    """The external source's outputs for records of ``params`` type in a graph serving ``routes`` (one route or
    several of one graph), in order: the source's fields, the parameters' fields, then ``index``.
    ``per_frame_jitter`` adds the per-frame dimension where declared."""
    out = []
    for name, spec in (graph_fields(graph_source(routes)) + graph_fields(params)
                       + graph_fields(SampleRecord)):
        if per_frame_jitter and spec.per_frame:
            spec = GraphInput(spec.dtype, spec.ndim + 1, spec.layout)
        out.append((name, spec))
    return out


def _external_inputs(source, layout: list[tuple[str, GraphInput]]) -> dict:
    outs = fn.external_source(source=source, num_outputs=len(layout), batch=True,
                              dtype=[_DALI_TYPES[np.dtype(s.dtype)] for _, s in layout],
                              ndim=[s.ndim for _, s in layout], layout=[s.layout or None for _, s in layout])
    return dict(zip((name for name, _ in layout), outs))


# Frames past the end of a video are an error, never padding. The sampler never asks past the index's frame count,
# so a decoder that finds fewer frames means the file is not what the index says (replaced or damaged since it was
# probed): DALI fails the batch ("out-of-bounds frame index"), the loader finds the video by decoding the in-flight
# samples alone (decode_encoded_with_dali, on the bytes the graph was given) and quarantines it by name. 'edge'
# padding would hand out the last frame repeated as a silent static clip. (DALI 2.4 counts a video's packets, by
# its source: a frame past the last one that decodes but within the packet count comes back stale, not as an
# error; the index's count is what decodes, so the sampler does not ask for one.)
PAD_MODE = "none"
_OUT_OF_BOUNDS = re.compile(r"out-of-bounds frame index (\d+)\D.*?with (\d+) frames", re.S)


def _decode_route(inputs: dict, route: str, nvdec_affine: bool):
    backend = ROUTES[route].backend
    if backend is None:  # a host route (PyAV, DALI's CPU decoder in a worker): decoded and colour-corrected there
        return inputs["video"]
    extra = {"affine": nvdec_affine} if backend == "mixed" else {}
    frames = fn.decoders.video(inputs["encoded"], device=backend, frames=inputs["frames"], pad_mode=PAD_MODE,
                               **extra)
    # DALI's decoders convert with BT.601 whatever the tag: map to the tag's colours, as the CPU routes' frames are
    # (host_decode.py). On the GPU for every video: the identity leaves a frame as it is (its cost not yet measured).
    return fn.coord_transform(frames, M=inputs["colour"], dtype=types.UINT8)


def _decode(inputs: dict, routes: tuple[str, ...], nvdec_affine: bool = False, on_gpu: bool = False):
    """Frames (F, H, W, 3) uint8 FHWC; on the GPU when the route is NVDEC or ``on_gpu`` (a CPU route on a machine
    that trains on a GPU: its frames go to the GPU before augmentation, so the colour program and the resize run
    there instead of on the host, and the copy is the 8-bit frames). The routes of one graph share one backend."""
    frames = _decode_route(inputs, routes[0], nvdec_affine)
    on_host = ROUTES[routes[0]].backend != "mixed"
    return frames.gpu() if on_gpu and on_host else frames


def short_video_error(err: BaseException, name: str) -> BadVideoError | None:
    """A BadVideoError naming ``name`` (a file, or files) when ``err`` is DALI's error for a frame index past the end
    of a video (a file shorter than its index says), else None."""
    m = _OUT_OF_BOUNDS.search(str(err))
    if m is None:
        return None
    return BadVideoError(f"{name}: frame {m.group(1)} requested but the decoder finds only {m.group(2)} frames (the "
                         "file is shorter than its index says: replaced or damaged since it was indexed)")


def dali_error_reason(err: BaseException) -> str:
    """The informative line of a DALI error (its text is mostly pipeline traceback)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        if "failed" in ln.lower() and not ln.startswith("File "):
            return ln.split("failed: ", 1)[-1]
    return lines[0] if lines else type(err).__name__


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


# Conditionals: the colour program runs per sample (color_jitter.py).
@pipeline_def(enable_conditionals=True)
def train_pipeline(source, *, input_size: int, routes: Union[str, Sequence[str]], dtype: str,
                   per_frame_jitter: bool = False, nvdec_affine: bool = False, augment_on_gpu: bool = False):
    """Training graph: decode T sampled frames -> MultiScaleCrop+resize (one ROI resize) -> colour jitter /
    grayscale -> flip + normalise -> (T, 3, S, S). ``source`` yields :func:`batch_columns` of records with
    :class:`TrainParams` on ``routes`` (one route, or the routes of one graph: :func:`graph_source`).
    ``nvdec_affine``: pin the NVDEC decoder's threads (DATA.NVDEC_AFFINE). ``augment_on_gpu``: a CPU route's
    frames are augmented on the GPU (``_decode``). Outputs: video, index."""
    routes = _route_tuple(routes)
    x = _external_inputs(source, record_layout(TrainParams, routes, per_frame_jitter))
    video = _decode(x, routes, nvdec_affine, augment_on_gpu)
    video = _roi_resize(video, x["roi_start"], x["roi_end"], input_size)
    video = jitter_frames(video, x["color_ops"], x["brightness"], x["contrast"], x["saturation"], x["hue"],
                          per_frame=per_frame_jitter)
    video = _normalize(video, dtype, mirror=x["mirror"])
    return video, x["index"]


@pipeline_def
def _multiview_graph(source, *, input_size: int, num_crop: int, routes: tuple[str, ...], dtype: str,
                     nvdec_affine: bool, augment_on_gpu: bool):
    x = _external_inputs(source, record_layout(TestParams, routes))
    video = _decode(x, routes, nvdec_affine, augment_on_gpu)
    crops = [_roi_resize(video, x["roi_start"][c], x["roi_end"][c], input_size) for c in range(num_crop)]
    video = crops[0] if num_crop == 1 else fn.cat(*crops, axis=0)
    video = fn.sequence_rearrange(video, new_order=x["new_order"])
    video = _normalize(video, dtype)
    return video, x["index"]


def test_pipeline(source, *, input_size: int, num_crop: int, routes: Union[str, Sequence[str]], dtype: str,
                  nvdec_affine: bool = False, augment_on_gpu: bool = False, **pipeline_kwargs):
    """Multi-view test graph over records with :class:`TestParams` on ``routes`` (as in :func:`train_pipeline`;
    ``pipeline_kwargs``: DALI's pipeline arguments).

    The sorted union of all clips' frame indices is decoded once (U frames); each spatial crop is one ROI resize
    of those U frames; the crops are concatenated along the frame axis and one per-sample gather
    (``sequence_rearrange`` with ``new_order = crop * U + position of the clip's frame in the union``) lays out
    the V*T output frames ordered [crop][clip][t]. ``augment_on_gpu`` as in :func:`train_pipeline`.
    Outputs: video (V*T, 3, S, S), index.
    """
    # No conditionals: the test graph only crops, so DALI never converts (re-reads) its source files.
    return _multiview_graph(source, input_size=input_size, num_crop=num_crop, routes=_route_tuple(routes),
                            dtype=dtype, nvdec_affine=nvdec_affine, augment_on_gpu=augment_on_gpu, **pipeline_kwargs)


_CONVERTED: set[tuple] = set()


def convert_graph_code(**graph_kwargs) -> None:
    """Have DALI convert the training graph's code (its colour program has conditionals) now, once per process and
    set of arguments.

    DALI converts a pipeline function with conditionals (and every function it calls) by reading its source file
    when such a graph is first defined, and keeps the conversion for the life of the process. A graph first defined
    later in a run (one rebuilt for a fallback route, or a training loader built after an edit of the checkout)
    would read files that may have been edited or replaced since the process imported them: the run then fails
    with an unrelated TypeError, or silently builds code the process is not running. Defining (not building) the
    training graph of both CPU routes when a loader is built converts every function any training graph calls,
    while the files are those the process runs. ``graph_kwargs``: the graph's arguments other than ``source`` and
    ``routes``. The test graph has no conditionals and needs none of this.

    A failure here is logged, not raised: the graph is then converted when it is built, which reports any error of
    its own.
    """
    key = tuple(sorted(graph_kwargs.items()))
    if key in _CONVERTED:
        return

    def no_data():
        raise StopIteration

    try:
        train_pipeline(no_data, routes=(DALI_CPU, PYAV), batch_size=1, num_threads=1, device_id=None, **graph_kwargs)
    except Exception as e:  # noqa: BLE001 - an early conversion must not become a new way to fail
        logger.warning("could not convert the training graph's code ahead (%s: %s); it is converted when first built",
                       type(e).__name__, e)
        return
    _CONVERTED.add(key)


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
    extra = {"affine": False} if decode_device == "mixed" else {}  # no NVML CPU mask: it fails in some VMs
    return fn.decoders.video(enc, device=decode_device, frames=frames, pad_mode=PAD_MODE, **extra)


def build_decode_pipeline(encoded: Sequence[np.ndarray], indices: Sequence[Sequence[int]], device: str = "cpu",
                          device_id: int | None = None, num_threads: int = 1):
    """A built pipeline whose single run decodes ``indices[k]`` of the encoded video ``encoded[k]`` (uint8 bytes of
    a whole file or of a GOP cut; no augmentation), for exactness tests and for probing which video broke a
    pipeline. ``device``: 'cpu' or 'mixed'."""
    if len(encoded) != len(indices):
        raise ValueError(f"{len(encoded)} videos but {len(indices)} index lists")
    source = one_batch_source(([np.asarray(e, dtype=np.uint8) for e in encoded],
                               [np.asarray(i, dtype=np.int32) for i in indices]))
    if device == "mixed" and device_id is None:
        device_id = 0
    pipe = _decode_only_pipeline(source, decode_device=device, batch_size=max(1, len(encoded)),
                                 num_threads=num_threads, device_id=device_id if device == "mixed" else None,
                                 prefetch_queue_depth=1)
    pipe.build()
    return pipe


def decode_with_dali(paths: Sequence[str], indices: Sequence[Sequence[int]], device: str = "cpu",
                     device_id: int | None = None) -> list[np.ndarray]:
    """Decode ``indices[k]`` of the file ``paths[k]`` with ``fn.decoders.video``; uint8 RGB arrays (F, H, W, 3) on
    the host. Errors as :func:`decode_encoded_with_dali`'s, naming the files."""
    return decode_encoded_with_dali([np.fromfile(p, dtype=np.uint8) for p in paths], indices, device, device_id,
                                    name=", ".join(map(str, paths)))


def decode_encoded_with_dali(encoded: Sequence[np.ndarray], indices: Sequence[Sequence[int]], device: str = "cpu",
                             device_id: int | None = None, name: str = "memory file") -> list[np.ndarray]:
    """Decode ``indices[k]`` of the encoded video ``encoded[k]`` (uint8 bytes) with ``fn.decoders.video``; uint8 RGB
    arrays (F, H, W, 3) on the host.

    Raises:
        BadVideoError: an index is at or past the number of frames the decoder finds (the message names ``name``
            and both numbers).
        RuntimeError: DALI's, when a video cannot be decoded.
    """
    pipe = build_decode_pipeline(encoded, indices, device, device_id)
    try:
        try:
            (out,) = pipe.run()
        except RuntimeError as e:
            short = short_video_error(e, name)
            if short is None:
                raise
            raise short from None
        if device == "mixed":
            out = out.as_cpu()
        return [np.array(out[i]) for i in range(len(out))]
    finally:
        del pipe
