"""Decoding on the host, in the decode worker processes: both CPU routes end here.

The ``pyav`` route decodes with PyAV (``pyav_io.decode_indexed_frames``); the ``dali_cpu`` route (VP8/VP9/MJPEG)
with DALI's CPU decoder, through a small decode-only pipeline that each worker process builds once and reuses.
Either way the worker returns the requested frames as one uint8 (F, H, W, 3) array and the ``host`` graph only
augments them. DALI's decoder converts YUV to RGB with BT.601 whatever the stream's tag; the frames of a video tagged
with another matrix are corrected here to the tag's colours, PyAV's (``colour.py``), so both CPU routes give one
video the same colours. Here rather than in the graph: only tagged videos pay for it (DALI's ``coord_transform`` on
the CPU cost about as much for the identity as for a real map), and in parallel with the graph.

Why DALI's CPU decoder runs here and not inside the augmentation graph: DALI runs a graph's CPU operators one at a
time, so a decoder inside the graph waited for the augmentation of the previous batch and the augmentation for the
decoder, and the loader kept about 1.8 of 2 cores busy. In worker processes the decodes of the next batches run while
the graph augments this one, as PyAV's always did: on 2 cores, in paired rounds against the all-PyAV loader, training
came 0.89x with the decoder in the graph, and 1.00x on a mixed VP9 + H.264 list and 1.08x on VP9 alone with it here
(docs/PERFORMANCE.md, "Per-video routing").
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from .colour import correct_frames, correction
from .gop_pack import PACKABLE_CODECS, pack_for_frames
from .pyav_open import BadVideoError, check_unchanged

__all__ = ["DaliDecodeError", "decode_with_dali_cpu", "decode_bytes_with_dali_cpu", "read_bytes", "read_source"]

# One decode-only pipeline per worker process (built at the first DALI-routed video the worker gets).
_PIPELINE = None


class DaliDecodeError(RuntimeError):
    """DALI's decoder on a video's route failed on it, or would decode other frames than the index numbers (not a
    missing or changed file, not a short one): the loader moves it to its fallback route (PyAV; from NVDEC, the CPU
    route) before it quarantines it."""


def read_bytes(path: str, size: int = 0, mtime_ns: int = 0) -> np.ndarray:
    """A whole file as uint8; BadVideoError for an empty one, VideoChangedError when ``size``/``mtime_ns`` (the
    index's record, 0: not checked) no longer describe it (checked on the open file, so a file replaced while
    being read is not mistaken for the indexed one)."""
    with open(path, "rb") as f:
        check_unchanged(path, size, mtime_ns, os.fstat(f.fileno()))
        data = np.fromfile(f, dtype=np.uint8)
    if data.size == 0:
        raise BadVideoError(f"{path}: zero-byte file")
    return data


def read_source(path: str, frames: Iterable[int], size: int, mtime_ns: int, pack: bool,
                data: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The bytes DALI's decoder is given for ``frames`` of ``path`` and the frame indices within them: the GOP
    prefixes the frames need when ``pack`` (``gop_pack``; the decoders decode from the start of what they are given)
    and cutting saves work, else the whole file. ``data``: the file's bytes, already read (``read_bytes``)."""
    data = read_bytes(path, size, mtime_ns) if data is None else data
    frames = np.asarray(frames, np.int32)
    if pack:
        packed = pack_for_frames(data, frames)
        if packed is not None:
            return packed[0], np.asarray(packed[1], np.int32)
    return data, frames


def _pipeline():
    global _PIPELINE
    if _PIPELINE is None:
        from nvidia.dali import fn, pipeline_def, types

        from .pipelines import PAD_MODE

        @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1, exec_dynamic=True)
        def decode_one():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
            return fn.decoders.video(encoded, device="cpu", frames=frames, pad_mode=PAD_MODE)

        pipe = decode_one()
        pipe.build()
        _PIPELINE = pipe
    return _PIPELINE


def decode_with_dali_cpu(path: str, frames: Iterable[int], size: int, mtime_ns: int, codec: str,
                         pack: bool = True, colorspace: str = "") -> np.ndarray:
    """``frames`` of ``path`` decoded by DALI's CPU decoder: uint8 (F, H, W, 3) RGB, in the order asked, in the
    colours of the stream's YUV matrix tag ``colorspace`` (the index's; '' or a BT.601 tag: as DALI decodes them).

    ``pack``: hand the decoder only the GOPs the frames need (VP8/VP9/MJPEG; DALI's decoder never seeks).

    Raises:
        VideoChangedError / BadVideoError / OSError: the file changed since it was indexed, is empty, shorter than
            its index says, or cannot be read.
        DaliDecodeError: DALI's decoder failed on it.
    """
    encoded, wanted = read_source(path, frames, size, mtime_ns, pack and codec.lower() in PACKABLE_CODECS)
    decoded = decode_bytes_with_dali_cpu(encoded, wanted, path)
    matrix = correction(colorspace)
    return decoded if matrix is None else correct_frames(decoded, matrix)


def decode_bytes_with_dali_cpu(encoded: np.ndarray, frames: Iterable[int], name: str = "memory file") -> np.ndarray:
    """``frames`` of the encoded video ``encoded`` (uint8 bytes of a whole file or a GOP cut) decoded by DALI's CPU
    decoder; errors as :func:`decode_with_dali_cpu`'s, naming ``name``."""
    global _PIPELINE
    from .pipelines import dali_error_reason, short_video_error

    pipe = _pipeline()
    pipe.feed_input("encoded", [np.asarray(encoded, np.uint8)])
    pipe.feed_input("frames", [np.asarray(frames, np.int32)])
    try:
        (out,) = pipe.run()
    except RuntimeError as e:
        _PIPELINE = None  # a failed pipeline is not reused
        short = short_video_error(e, name)
        if short is not None:
            raise short from None
        raise DaliDecodeError(f"{name}: DALI's CPU decoder failed: {dali_error_reason(e)}") from None
    return np.array(out[0])
