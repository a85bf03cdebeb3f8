"""Ask the NVIDIA driver what this GPU's NVDEC decodes: ``cuvidGetDecoderCaps`` for each codec configuration.

The support table of :mod:`dali_pipelines.nvdec_support` is what NVIDIA publishes for data-centre GPUs; the driver
knows the GPU at hand (a GPU without a codec, other size limits) and how many NVDEC engines serve each codec. DALI's
mixed decoder asks the same question when it opens a video and fails the batch when the answer is no ("Codec
configuration not supported on this GPU", "Video is too small ..."): asked once at start-up, the answer routes such
videos to the CPU before the first batch.

Plain ctypes over the driver's ``libcuda.so.1`` and ``libnvcuvid.so.1`` (no CUDA toolkit, no torch): the question
needs a current CUDA context, for which the device's primary context (the one torch and DALI use) is retained and
released around it. The structure's layout is ``CUVIDDECODECAPS`` of NVIDIA's ``cuviddec.h`` (88 bytes).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace

__all__ = ["DecoderCaps", "NvdecCapsError", "CodecConfig", "CUDA_VIDEO_CODEC", "load_driver", "query_decoder_caps",
           "describe_caps",
           "size_range"]

# cudaVideoCodec values (cuviddec.h) of the codecs NVDEC may take, by FFmpeg's names.
CUDA_VIDEO_CODEC = {"mpeg4": 2, "h264": 4, "hevc": 8, "vp8": 9, "vp9": 10, "av1": 11}
# cudaVideoChromaFormat values, by the chroma names of nvdec_support.chroma_and_bit_depth.
_CUDA_CHROMA = {"400": 0, "420": 1, "422": 2, "444": 3}

CodecConfig = tuple[str, str, int]  # (codec, chroma, bit depth), e.g. ("h264", "420", 8)


class _DecodeCapsStruct(ctypes.Structure):
    _fields_ = [
        ("eCodecType", ctypes.c_int), ("eChromaFormat", ctypes.c_int), ("nBitDepthMinus8", ctypes.c_uint),
        ("reserved1", ctypes.c_uint * 3),
        ("bIsSupported", ctypes.c_ubyte), ("nNumNVDECs", ctypes.c_ubyte), ("nOutputFormatMask", ctypes.c_ushort),
        ("nMaxWidth", ctypes.c_uint), ("nMaxHeight", ctypes.c_uint), ("nMaxMBCount", ctypes.c_uint),
        ("nMinWidth", ctypes.c_ushort), ("nMinHeight", ctypes.c_ushort),
        ("bIsHistogramSupported", ctypes.c_ubyte), ("nCounterBitDepth", ctypes.c_ubyte),
        ("nMaxHistogramBins", ctypes.c_ushort), ("reserved3", ctypes.c_uint * 10),
    ]


_CU = ctypes.c_int  # CUresult
_CTX = ctypes.c_void_p  # CUcontext
# The driver calls this module makes, as ctypes prototypes: bound to the libraries by load_driver, or to Python
# functions by a test (the arguments are marshalled the same way either way).
_PROTOTYPES = {
    "cuInit": ctypes.CFUNCTYPE(_CU, ctypes.c_uint),
    "cuDeviceGet": ctypes.CFUNCTYPE(_CU, ctypes.POINTER(ctypes.c_int), ctypes.c_int),
    "cuDevicePrimaryCtxRetain": ctypes.CFUNCTYPE(_CU, ctypes.POINTER(_CTX), ctypes.c_int),
    "cuDevicePrimaryCtxRelease_v2": ctypes.CFUNCTYPE(_CU, ctypes.c_int),
    "cuCtxPushCurrent_v2": ctypes.CFUNCTYPE(_CU, _CTX),
    "cuCtxPopCurrent_v2": ctypes.CFUNCTYPE(_CU, ctypes.POINTER(_CTX)),
    "cuvidGetDecoderCaps": ctypes.CFUNCTYPE(_CU, ctypes.POINTER(_DecodeCapsStruct)),
}
_NVCUVID_CALLS = {"cuvidGetDecoderCaps"}


class NvdecCapsError(RuntimeError):
    """The driver could not be asked (a library or symbol missing, a CUDA call failing)."""


@dataclass(frozen=True)
class DecoderCaps:
    """The driver's answer for one codec configuration."""

    supported: bool
    engines: int  # NVDEC engines that decode this configuration (0: a driver too old to say)
    min_size: tuple[int, int]  # (width, height)
    max_size: tuple[int, int]
    max_macroblocks: int  # width * height / 256 at most

    def refusal(self, codec: str, width: int, height: int, chroma: str, depth: int) -> str | None:
        """Why this GPU's NVDEC (as DALI's mixed decoder checks it) would not take a ``width`` x ``height`` video
        of this configuration, or None when it would."""
        if not self.supported:
            return (f"this GPU's NVDEC does not decode {depth}-bit {chroma[0]}:{chroma[1]}:{chroma[2]} {codec} "
                    f"(the driver's decoder capabilities)")
        (min_w, min_h), (max_w, max_h) = self.min_size, self.max_size
        if width < min_w or height < min_h:
            return f"{width}x{height} is below NVDEC's {codec} minimum of {min_w}x{min_h} on this GPU"
        if width > max_w or height > max_h:
            return f"{width}x{height} is above NVDEC's {codec} maximum of {max_w}x{max_h} on this GPU"
        if width * height // 256 > self.max_macroblocks:
            return (f"{width}x{height} has {width * height // 256} macroblocks, above NVDEC's {codec} maximum of "
                    f"{self.max_macroblocks} on this GPU")
        return None


def size_range(smallest: tuple[int, int], largest: tuple[int, int]) -> str:
    """``48x16 to 4096x4096``."""
    return f"{smallest[0]}x{smallest[1]} to {largest[0]}x{largest[1]}"


def load_driver() -> SimpleNamespace:
    """The driver calls of :data:`_PROTOTYPES`, bound to ``libcuda.so.1`` and ``libnvcuvid.so.1``.

    Raises:
        NvdecCapsError: a library cannot be loaded or lacks a symbol.
    """
    libs = {}
    for name in ("libcuda.so.1", "libnvcuvid.so.1"):
        try:
            libs[name] = ctypes.CDLL(name)
        except OSError as e:
            raise NvdecCapsError(f"cannot load {name}: {e}") from None
    calls = {}
    for symbol, prototype in _PROTOTYPES.items():
        lib = "libnvcuvid.so.1" if symbol in _NVCUVID_CALLS else "libcuda.so.1"
        try:
            calls[symbol] = prototype((symbol, libs[lib]))
        except AttributeError:
            raise NvdecCapsError(f"{lib} has no {symbol} (a driver too old)") from None
    return SimpleNamespace(**calls)


def _check(status: int, call: str) -> None:
    if status != 0:
        raise NvdecCapsError(f"{call} failed with CUresult {status}")


def query_decoder_caps(configs: Iterable[CodecConfig], device: int = 0,
                       driver: SimpleNamespace | None = None) -> dict[CodecConfig, DecoderCaps]:
    """The driver's answer for each ``(codec, chroma, bit depth)`` of ``configs`` on CUDA device ``device`` (an
    index among the visible devices, as torch counts them). A configuration whose question fails is left out (the
    caller falls back to its table for it).

    Raises:
        NvdecCapsError: the driver cannot be loaded, the device's context not made current, or every question
            failed (the first failure named).
    """
    configs = list(configs)
    for codec, chroma, _ in configs:
        if codec not in CUDA_VIDEO_CODEC or chroma not in _CUDA_CHROMA:
            raise ValueError(f"no NVDEC codec configuration for {codec!r} with chroma {chroma!r}")
    drv = driver if driver is not None else load_driver()
    _check(drv.cuInit(0), "cuInit")
    handle = ctypes.c_int()
    _check(drv.cuDeviceGet(ctypes.byref(handle), int(device)), f"cuDeviceGet({device})")
    ctx = _CTX()
    _check(drv.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), handle.value), "cuDevicePrimaryCtxRetain")
    answers: dict[CodecConfig, DecoderCaps] = {}
    failures = []
    try:
        _check(drv.cuCtxPushCurrent_v2(ctx), "cuCtxPushCurrent")
        try:
            for codec, chroma, depth in configs:
                caps = _DecodeCapsStruct(eCodecType=CUDA_VIDEO_CODEC[codec], eChromaFormat=_CUDA_CHROMA[chroma],
                                         nBitDepthMinus8=depth - 8)
                status = drv.cuvidGetDecoderCaps(ctypes.byref(caps))
                if status != 0:
                    failures.append(f"cuvidGetDecoderCaps({codec}, {chroma}, {depth}-bit) failed with CUresult "
                                    f"{status}")
                    continue
                answers[(codec, chroma, depth)] = DecoderCaps(
                    supported=bool(caps.bIsSupported), engines=int(caps.nNumNVDECs),
                    min_size=(int(caps.nMinWidth), int(caps.nMinHeight)),
                    max_size=(int(caps.nMaxWidth), int(caps.nMaxHeight)), max_macroblocks=int(caps.nMaxMBCount))
        finally:
            drv.cuCtxPopCurrent_v2(ctypes.byref(_CTX()))
    finally:
        drv.cuDevicePrimaryCtxRelease_v2(handle.value)
    if configs and not answers:
        raise NvdecCapsError(failures[0])
    return answers


def describe_caps(answers: Mapping[CodecConfig, DecoderCaps]) -> list[str]:
    """One line per codec of ``answers``: each bit depth's size range, or that it is not decoded."""
    by_codec: dict[str, list[str]] = {}
    for (codec, chroma, depth), caps in sorted(answers.items()):
        if caps.supported:
            text = f"{depth}-bit {size_range(caps.min_size, caps.max_size)}"
        else:
            text = f"{depth}-bit not decoded"
        by_codec.setdefault(f"{codec} {chroma[0]}:{chroma[1]}:{chroma[2]}", []).append(text)
    return [f"{name}: {'; '.join(parts)}" for name, parts in by_codec.items()]
