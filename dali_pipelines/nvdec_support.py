"""What NVDEC decodes, and whether this machine can run the GPU decode route at all.

Two questions that are cheap to answer before the first video reaches the GPU, and expensive to learn from a run:

- Does NVDEC accept a video? A pure rule over codec, coded size, chroma format and bit depth, from the NVDEC
  support matrix of NVIDIA's Video Codec SDK, or from the driver's own answer for the GPU at hand where it was
  asked (:mod:`dali_pipelines.nvdec_caps`). Below a codec's minimum size DALI's mixed decoder raises "Video is
  too small"; a video NVDEC refuses must be decoded on the CPU instead of being quarantined.
- Can this machine decode on the GPU? DALI's wheel is built for one CUDA major version and needs a driver that
  supports it; NVDEC itself lives in the driver's ``libnvcuvid.so.1``, which containers omit unless started with the
  ``video`` driver capability. Both failures otherwise surface only at the first batch, video by video.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .nvdec_caps import CodecConfig, DecoderCaps, size_range

__all__ = ["NvdecLimits", "NVDEC_LIMITS", "DALI_MIXED_CHROMA", "chroma_and_bit_depth", "nvdec_refusal",
           "table_differences",
           "dali_cuda_major", "driver_cuda_version", "nvcuvid_loads", "gpu_decode_problems"]


@dataclass(frozen=True)
class NvdecLimits:
    min_size: tuple[int, int]  # (width, height)
    max_size: tuple[int, int]
    chroma: frozenset[str]  # what the hardware decodes, e.g. {"420", "444"}
    bit_depths: frozenset[int]


def _limits(min_wh, max_wh, chroma=("420",), depths=(8,)) -> NvdecLimits:
    return NvdecLimits(tuple(min_wh), tuple(max_wh), frozenset(chroma), frozenset(depths))


# NVDEC on Turing and newer data-centre GPUs (T4, A100, H100/H200), codec names as FFmpeg reports them.
# Source: NVIDIA Video Codec SDK, NVDEC application note, "decoder capabilities" table.
NVDEC_LIMITS: dict[str, NvdecLimits] = {
    "h264": _limits((48, 16), (4096, 4096)),
    "hevc": _limits((144, 144), (8192, 8192), ("420", "444"), (8, 10, 12)),
    "vp9": _limits((128, 128), (8192, 8192), ("420",), (8, 10, 12)),
    "vp8": _limits((48, 16), (4096, 4096)),
    "mpeg4": _limits((48, 16), (2032, 2032)),
    "av1": _limits((128, 128), (8192, 8192), ("420",), (8, 10)),
}

# What DALI 2.4's mixed decoder itself takes, whatever the hardware decodes: it creates the NVDEC decoder with
# NV12 output (8-bit 4:2:0) and its colour conversion reads NV12, so 4:2:2 and 4:4:4 streams cannot come out of it
# (cuvidCreateDecoder refuses 4:4:4 into NV12). Those go to the CPU up front instead of failing batch by batch.
DALI_MIXED_CHROMA = frozenset({"420"})

# AV1 decoding arrived with GA10x (sm_86); GA100 (sm_80), Turing (sm_75) and Hopper (sm_90) lack it.
_AV1_COMPUTE_CAPABILITIES = {(8, 6), (8, 7), (8, 9)}
_AV1_FROM_MAJOR = 10  # Blackwell onwards


def chroma_and_bit_depth(pix_fmt: str) -> tuple[str, int]:
    """('420' | '422' | '444' | '400', bits) for an FFmpeg pixel-format name such as yuv420p10le or yuvj420p."""
    name = pix_fmt.lower()
    if name in ("gray", "gray8"):
        return "400", 8
    if name.startswith("gray") and name[4:6].isdigit():
        return "400", int(name[4:6])
    if name in ("nv12", "nv21"):
        return "420", 8
    if name in ("p010le", "p010be"):
        return "420", 10
    m = re.match(r"^yuvj?(4[24][024])p(\d+)?(?:le|be)?$", name)
    if not m:
        raise ValueError(f"unknown pixel format {pix_fmt!r}")
    return m.group(1), int(m.group(2) or 8)


def nvdec_refusal(codec: str, width: int, height: int, pix_fmt: str,
                  compute_capability: tuple[int, int] = (9, 0), codecs: set[str] | None = None,
                  max_bit_depth: int = 8, driver_caps: Mapping[CodecConfig, DecoderCaps] | None = None
                  ) -> str | None:
    """Why NVDEC (through DALI's mixed decoder) would not take this video, or None when it would.

    ``codecs`` narrows the codecs sent to NVDEC (None: every codec of the table). ``max_bit_depth`` caps what is
    sent even where the hardware decodes more: DALI's mixed decoder converts to 8-bit RGB, and deeper streams have
    not been checked against the CPU route, so 8 is the default. ``driver_caps``: the driver's answers for this
    GPU (:func:`~dali_pipelines.nvdec_caps.query_decoder_caps`); where it has one for the video's
    configuration, it decides support and size limits instead of the table.
    """
    codec = codec.lower()
    limits = NVDEC_LIMITS.get(codec)
    if limits is None:
        return f"NVDEC does not decode {codec}"
    if codecs is not None and codec not in codecs:
        return f"{codec} is not among the codecs configured for NVDEC ({', '.join(sorted(codecs))})"
    if driver_caps:
        try:
            chroma, depth = chroma_and_bit_depth(pix_fmt)
        except ValueError:
            chroma, depth = "", 0
        caps = driver_caps.get((codec, chroma, depth))
        if caps is not None and chroma in DALI_MIXED_CHROMA and depth <= max_bit_depth:
            return caps.refusal(codec, width, height, chroma, depth)
    if codec == "av1":
        cc = tuple(compute_capability)
        if cc not in _AV1_COMPUTE_CAPABILITIES and cc[0] < _AV1_FROM_MAJOR:
            return f"this GPU (compute capability {cc[0]}.{cc[1]}) has no AV1 decoder"
    (min_w, min_h), (max_w, max_h) = limits.min_size, limits.max_size
    if width < min_w or height < min_h:
        return f"{width}x{height} is below NVDEC's {codec} minimum of {min_w}x{min_h}"
    if width > max_w or height > max_h:
        return f"{width}x{height} is above NVDEC's {codec} maximum of {max_w}x{max_h}"
    try:
        chroma, depth = chroma_and_bit_depth(pix_fmt)
    except ValueError:
        return f"pixel format {pix_fmt} is not one NVDEC decodes"
    if chroma not in limits.chroma:
        return f"NVDEC does not decode {codec} with {chroma[0]}:{chroma[1]}:{chroma[2]} chroma ({pix_fmt})"
    if chroma not in DALI_MIXED_CHROMA:
        return (f"DALI's NVDEC decoder outputs 4:2:0 only; {codec} with {chroma[0]}:{chroma[1]}:{chroma[2]} chroma "
                f"({pix_fmt}) goes to the CPU")
    if depth not in limits.bit_depths:
        return f"NVDEC does not decode {depth}-bit {codec} ({pix_fmt})"
    if depth > max_bit_depth:
        return f"{depth}-bit video is above the configured maximum of {max_bit_depth} bits for NVDEC ({pix_fmt})"
    return None


def table_differences(answers: Mapping[CodecConfig, DecoderCaps], compute_capability: tuple[int, int]) -> list[str]:
    """Where the driver's answers for a GPU (``nvdec_caps.query_decoder_caps``) differ from :data:`NVDEC_LIMITS`,
    one line each: what the table would get wrong on that GPU without them."""
    lines = []
    for (codec, chroma, depth), caps in sorted(answers.items()):
        limits = NVDEC_LIMITS[codec]
        table_says = chroma in limits.chroma and depth in limits.bit_depths and not (
            codec == "av1" and tuple(compute_capability) not in _AV1_COMPUTE_CAPABILITIES
            and compute_capability[0] < _AV1_FROM_MAJOR)
        name = f"{codec} {depth}-bit {chroma[0]}:{chroma[1]}:{chroma[2]}"
        if caps.supported != table_says:
            lines.append(f"{name}: the driver says {'decoded' if caps.supported else 'not decoded'}, the table "
                         f"{'decoded' if table_says else 'not decoded'}")
        elif caps.supported and (caps.min_size, caps.max_size) != (limits.min_size, limits.max_size):
            lines.append(f"{name}: the driver's sizes {size_range(caps.min_size, caps.max_size)}, the table's "
                         f"{size_range(limits.min_size, limits.max_size)}")
    return lines


# --------------------------------------------------------------------------------------------- the machine
def dali_cuda_major() -> int | None:
    """The CUDA major version the installed DALI wheel was built for (nvidia-dali-cuda130 -> 13), or None."""
    for dist in importlib.metadata.distributions():
        m = re.fullmatch(r"nvidia[-_]dali[-_]cuda(\d+?)0", (dist.metadata["Name"] or "").lower())
        if m:
            return int(m.group(1))
    return None


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA version the installed driver supports, e.g. (12, 4); None without an NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no NVML: nothing to compare against
        return None
    return version // 1000, (version % 1000) // 10


def nvcuvid_loads() -> bool:
    try:
        ctypes.CDLL("libnvcuvid.so.1")
    except OSError:
        return False
    return True


def gpu_decode_problems(driver_cuda: tuple[int, int] | None, dali_cuda: int | None, nvcuvid: bool) -> list[str]:
    """What stops GPU decoding on a machine with these facts, one sentence each (empty: nothing does)."""
    problems = []
    if dali_cuda is None:
        problems.append("NVIDIA DALI is not installed: install the project with the cuda13 extra (or cuda12 for "
                        "a CUDA 12 driver)")
    elif driver_cuda is not None and driver_cuda[0] < dali_cuda:
        problems.append(f"the installed DALI is built for CUDA {dali_cuda} but the NVIDIA driver supports CUDA "
                        f"{driver_cuda[0]}.{driver_cuda[1]} at most: update the driver, or install the cuda12 "
                        f"variant (nvidia-dali-cuda120 and torch for CUDA 12; see the README)")
    if not nvcuvid:
        problems.append("the driver's NVDEC library libnvcuvid.so.1 cannot be loaded (in a container, start it "
                        "with the 'video' driver capability, e.g. NVIDIA_DRIVER_CAPABILITIES=compute,video,utility)")
    return problems
