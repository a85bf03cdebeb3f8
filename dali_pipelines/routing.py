"""Which decoder takes a video: the decode device of a run and the decode route of a list.

Routes (``pipelines.ROUTES``): ``nvdec`` (DALI's ``mixed`` decoder on the GPU), ``dali_cpu`` (DALI's CPU decoder,
which has VP8/VP9/MJPEG only: its bundled FFmpeg has no H.264/HEVC/MPEG-4 software decoder) and ``pyav`` (decoded
on the host by PyAV). Today one route serves a whole list; the route is still decided per video
(``Sample.route``), so a per-video rule can replace :func:`list_route` without touching the feeder.
"""

from __future__ import annotations

from typing import Iterable

import torch

from configs import check_choice

from .filelist import DataError

__all__ = ["DALI_CPU_CODECS", "resolve_decode_device", "dali_cpu_decodes", "list_route"]

DALI_CPU_CODECS = ("vp8", "vp9", "mjpeg")


def resolve_decode_device(setting: str) -> str:
    """'gpu' or 'cpu' for DATA.DECODE_DEVICE ('auto': the GPU when CUDA is available).

    Raises:
        ConfigError: an unknown setting (checked by the config's own rule).
        DataError: 'gpu' on a machine without CUDA (an input error, not a crash).
    """
    check_choice("DATA.DECODE_DEVICE", setting)
    if setting == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if setting == "gpu" and not torch.cuda.is_available():
        raise DataError("DATA.DECODE_DEVICE is 'gpu' but CUDA is not available on this machine; "
                        "use 'auto' or 'cpu'")
    return setting


def dali_cpu_decodes(codec: str) -> bool:
    """Whether DALI's CPU decoder takes this codec (an FFmpeg codec name)."""
    c = codec.lower()
    return any(k in c for k in DALI_CPU_CODECS)


def list_route(device: str, cpu_decoder: str, codecs: Iterable[str], list_path: str) -> str:
    """The route of every video of a list: NVDEC on the GPU; on the CPU DATA.CPU_DECODER ('auto': DALI's CPU
    decoder when it takes every codec of the list, else PyAV).

    Raises:
        ValueError: DATA.CPU_DECODER 'dali' for a list with codecs that decoder lacks.
        ConfigError: an unknown DATA.CPU_DECODER setting.
    """
    check_choice("DATA.CPU_DECODER", cpu_decoder)
    if device == "gpu":
        return "nvdec"
    codecs = set(codecs)
    if cpu_decoder == "auto":
        return "dali_cpu" if all(dali_cpu_decodes(c) for c in codecs) else "pyav"
    if cpu_decoder == "dali":
        other = sorted(c for c in codecs if not dali_cpu_decodes(c))
        if other:
            raise ValueError(f"DATA.CPU_DECODER is 'dali' but {list_path} has {', '.join(other)} videos, "
                             "which DALI cannot decode on the CPU; use 'auto' or 'pyav'")
        return "dali_cpu"
    return "pyav"
