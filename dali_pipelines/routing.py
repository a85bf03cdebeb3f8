"""Which decoder each video goes to: NVDEC when it takes the video, otherwise the fastest CPU route that can.

The rule is a pure function of a video's decoder facts (from the index) and of the machine (decided once, when the
loader starts: the route depends on the GPU at hand, so it is never cached with the index):

1. NVDEC, through DALI's ``mixed`` decoder, when the GPU route works on this machine and NVDEC accepts the
   video's codec, size, chroma format and bit depth (:func:`dali_pipelines.nvdec_support.nvdec_refusal`);
2. otherwise DALI's CPU decoder for VP8, VP9 and MJPEG, the only codecs its bundled FFmpeg decodes;
3. otherwise PyAV, in worker processes, feeding the same DALI augmentation graph.

``DATA.CPU_DECODER`` narrows step 2-3 (``pyav``: every CPU video through PyAV; ``dali``: DALI's CPU decoder only,
an error for a codec it lacks), and ``DATA.NVDEC_CODECS`` / ``DATA.NVDEC_MAX_BIT_DEPTH`` narrow or widen step 1.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from dali_pipelines.nvdec_support import nvdec_refusal

__all__ = ["NVDEC", "DALI_CPU", "PYAV", "ROUTES", "DALI_CPU_CODECS", "RoutingPolicy", "choose_route",
           "route_counts", "cpu_share_warning"]

NVDEC, DALI_CPU, PYAV = "nvdec", "dali_cpu", "pyav"
ROUTES = (NVDEC, DALI_CPU, PYAV)
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})


@dataclass(frozen=True)
class RoutingPolicy:
    """The machine and the settings the rule needs, fixed when a loader starts."""

    gpu_usable: bool  # a GPU is present and DALI can decode on it (driver, libnvcuvid)
    compute_capability: tuple[int, int] = (9, 0)
    nvdec_codecs: frozenset[str] | None = None  # None: every codec NVDEC decodes
    nvdec_max_bit_depth: int = 8
    cpu_decoder: str = "auto"  # auto | dali | pyav

    def __post_init__(self) -> None:
        if self.cpu_decoder not in ("auto", "dali", "pyav"):
            raise ValueError(f"DATA.CPU_DECODER must be auto, dali or pyav, got {self.cpu_decoder!r}")


def choose_route(codec: str, width: int, height: int, pix_fmt: str, policy: RoutingPolicy) -> tuple[str, str]:
    """``(route, reason)`` for one video; the reason says why it is not on NVDEC (empty when it is)."""
    codec = codec.lower()
    if policy.gpu_usable:
        refusal = nvdec_refusal(codec, width, height, pix_fmt, compute_capability=policy.compute_capability,
                                codecs=policy.nvdec_codecs, max_bit_depth=policy.nvdec_max_bit_depth)
        if refusal is None:
            return NVDEC, ""
    else:
        refusal = "no usable GPU"
    if policy.cpu_decoder == "pyav":
        return PYAV, refusal
    if codec in DALI_CPU_CODECS:
        return DALI_CPU, refusal
    if policy.cpu_decoder == "dali":
        raise ValueError(f"DATA.CPU_DECODER is 'dali' but DALI's CPU decoder cannot decode {codec} "
                         f"(it decodes {', '.join(sorted(DALI_CPU_CODECS))}); use 'auto' or 'pyav'")
    return PYAV, refusal


def route_counts(routes: Iterable[str]) -> dict[str, int]:
    """Videos per route, every route present (zeros included) so that summaries line up across runs."""
    counts = Counter(routes)
    return {route: counts.get(route, 0) for route in ROUTES}


def cpu_share_warning(routes: list[str], reasons: list[str], gpu_present: bool, max_share: float) -> str | None:
    """A warning when a GPU machine would decode more than ``max_share`` of a list on the CPU, with the commonest
    reasons; None when the share is within bounds or there is no GPU (then the CPU is the only choice)."""
    if not gpu_present or not routes:
        return None
    on_cpu = [reason for route, reason in zip(routes, reasons) if route != NVDEC]
    share = len(on_cpu) / len(routes)
    if share <= max_share:
        return None
    top = "; ".join(f"{n} x {reason}" for reason, n in Counter(on_cpu).most_common(3))
    return (f"{len(on_cpu)} of {len(routes)} videos ({share:.0%}) will be decoded on the CPU although this machine "
            f"has a GPU (more than DATA.CPU_ROUTE_MAX_SHARE = {max_share:.0%}): {top}")
