"""Which decoder takes a video: the decode device of a run and the per-video rule.

Routes (``pipelines.ROUTES``): ``nvdec`` (DALI's ``mixed`` decoder on the GPU), ``dali_cpu`` (DALI's CPU decoder,
which has VP8/VP9/MJPEG only: its bundled FFmpeg has no H.264/HEVC/MPEG-4 software decoder) and ``pyav`` (decoded
on the host by PyAV, fed into the same DALI augmentation graph).

The loader routes every video on its own (:func:`route_videos`, deciding once per group of videos with the same
decoder facts and keeping a code per video, :class:`VideoRoutes`; the route is carried per sample as
``Sample.route``) with :func:`choose_route`, a pure function of a video's decoder facts (from the index) and of the
machine (:func:`machine_policy`), decided when a loader starts (never cached with the index):

1. NVDEC when the GPU route works on this machine and NVDEC accepts the video's codec, size, chroma format and bit
   depth (:func:`dali_pipelines.nvdec_support.nvdec_refusal`; the driver's answer for this GPU where it could be
   asked at start-up, :func:`ask_driver_caps`, else NVIDIA's published table);
2. otherwise DALI's CPU decoder for VP8, VP9 and MJPEG;
3. otherwise PyAV.

``DATA.CPU_DECODER`` narrows steps 2-3 (``pyav``: every CPU video through PyAV; ``dali``: DALI's CPU decoder only,
an error for a codec it lacks); ``DATA.NVDEC_CODECS`` narrows NVDEC's codecs and ``DATA.NVDEC_MAX_BIT_DEPTH``
widens its bit depth. A video that fails on its route at run time moves to :func:`fallback_route` (NVDEC -> the
CPU route of step 2-3, DALI's CPU decoder -> PyAV) before it is quarantined; one the index knows NVDEC would number
otherwise than it does (``VideoInfo.nvdec_problem``) is moved there by the loader at start-up.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator

import numpy as np

from configs import check_choice

from .filelist import DataError
from .nvdec_caps import CodecConfig, DecoderCaps, NvdecCapsError, query_decoder_caps
from .nvdec_support import (DALI_MIXED_CHROMA, NVDEC_LIMITS, dali_cuda_major, driver_cuda_version, gpu_decode_problems,
                            nvcuvid_loads, nvdec_refusal)

__all__ = ["NVDEC", "DALI_CPU", "PYAV", "ROUTES", "DALI_CPU_CODECS", "resolve_decode_device",
           "RoutingPolicy", "machine_policy", "nvdec_configs", "ask_driver_caps", "nvdec_threads_line",
           "choose_route", "fallback_route", "VideoRoute", "VideoRoutes", "route_videos", "cpu_share_warning"]

log = logging.getLogger(__name__)

NVDEC, DALI_CPU, PYAV = "nvdec", "dali_cpu", "pyav"
ROUTES = (NVDEC, DALI_CPU, PYAV)
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})


def resolve_decode_device(setting: str) -> str:
    """'gpu' or 'cpu' for DATA.DECODE_DEVICE ('auto': the GPU when CUDA is available and it can decode there).

    The GPU route needs a driver that supports DALI's CUDA version and the driver's NVDEC library; without them
    every video would fail at its first batch, so the problem is said here, once: 'gpu' stops with it, 'auto' warns
    and decodes on the CPU.

    Raises:
        ConfigError: an unknown setting (checked by the config's own rule).
        DataError: 'gpu' on a machine without CUDA or where the GPU route cannot decode.
    """
    check_choice("DATA.DECODE_DEVICE", setting)
    if setting == "cpu":
        return "cpu"
    import torch  # not at the top: the decode workers import this module (through pipelines) and need no torch

    if not torch.cuda.is_available():
        if setting == "gpu":
            raise DataError("DATA.DECODE_DEVICE is 'gpu' but CUDA is not available on this machine; "
                            "use 'auto' or 'cpu'")
        return "cpu"
    problems = gpu_decode_problems(driver_cuda_version(), dali_cuda_major(), nvcuvid_loads())
    if problems:
        if setting == "gpu":
            raise DataError("DATA.DECODE_DEVICE is 'gpu' but this machine cannot decode on the GPU: "
                            + "; ".join(problems))
        log.warning("GPU DECODING IS OFF, videos are decoded on the CPU (much slower): %s", "; ".join(problems))
        return "cpu"
    return "gpu"


# ------------------------------------------------------------------------------------------ per-video rule
@dataclass(frozen=True)
class RoutingPolicy:
    """The machine and the settings the per-video rule needs, fixed when a loader starts."""

    gpu_usable: bool  # a GPU is present and DALI can decode on it (driver, libnvcuvid)
    compute_capability: tuple[int, int] = (9, 0)
    nvdec_codecs: frozenset[str] | None = None  # None: every codec NVDEC decodes
    nvdec_max_bit_depth: int = 8
    cpu_decoder: str = "auto"  # auto | dali | pyav
    # The driver's answers for this GPU (nvdec_caps.query_decoder_caps); None: not asked, or the question failed
    # (then NVIDIA's published table decides alone).
    driver_caps: Mapping[CodecConfig, DecoderCaps] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.cpu_decoder not in ("auto", "dali", "pyav"):
            raise ValueError(f"DATA.CPU_DECODER must be auto, dali or pyav, got {self.cpu_decoder!r}")

    @property
    def nvdec_engines(self) -> int | None:
        """NVDEC engines on this GPU as the driver counts them (None: it was not asked, or too old to say)."""
        engines = max((c.engines for c in (self.driver_caps or {}).values() if c.supported), default=0)
        return engines or None


def machine_policy(device: str, cpu_decoder: str = "auto", nvdec_codecs: Iterable[str] = (),
                   nvdec_max_bit_depth: int = 8, device_id: int | None = None) -> RoutingPolicy:
    """The policy of this machine: ``device`` is :func:`resolve_decode_device`'s answer ('gpu' only when CUDA is
    available and the GPU route works), the GPU's compute capability read from ``device_id`` (default: the
    current device), and the DATA.CPU_DECODER / NVDEC_CODECS / NVDEC_MAX_BIT_DEPTH settings."""
    import torch

    gpu = device == "gpu"
    capability = tuple(torch.cuda.get_device_capability(device_id)) if gpu else (9, 0)
    codecs = frozenset(str(c).lower() for c in nvdec_codecs) or None
    caps = None
    if gpu:
        device_index = torch.cuda.current_device() if device_id is None else int(device_id)
        caps = ask_driver_caps(device_index, codecs, int(nvdec_max_bit_depth))
    return RoutingPolicy(gpu_usable=gpu, compute_capability=capability, nvdec_codecs=codecs,
                         nvdec_max_bit_depth=int(nvdec_max_bit_depth), cpu_decoder=cpu_decoder, driver_caps=caps)


def nvdec_configs(codecs: Iterable[str] | None, max_bit_depth: int) -> list[CodecConfig]:
    """The codec configurations NVDEC may be sent under these settings: each codec of the table (or of
    ``codecs``), 4:2:0 (the only chroma DALI's mixed decoder outputs), each bit depth up to ``max_bit_depth``."""
    names = sorted(NVDEC_LIMITS if codecs is None else set(codecs) & set(NVDEC_LIMITS))
    return [(codec, chroma, depth) for codec in names for chroma in sorted(DALI_MIXED_CHROMA)
            for depth in sorted(NVDEC_LIMITS[codec].bit_depths) if depth <= max_bit_depth]


def ask_driver_caps(device_index: int, codecs: Iterable[str] | None,
                    max_bit_depth: int) -> dict[CodecConfig, DecoderCaps] | None:
    """The driver's answers for the configurations of :func:`nvdec_configs` on CUDA device ``device_index``, or
    None (with a warning) when it cannot be asked: routing then follows the published table alone."""
    try:
        return query_decoder_caps(nvdec_configs(codecs, max_bit_depth), device=device_index)
    except NvdecCapsError as e:
        log.warning("could not ask the NVIDIA driver what NVDEC decodes on GPU %d (%s); routing by NVIDIA's "
                    "published support table instead", device_index, e)
        return None


def nvdec_threads_line(engines: int | None, threads: int) -> str:
    """What a loader logs about its NVDEC graph: the GPU's NVDEC engines and the decoder threads it runs."""
    have = f"{engines} engines on this GPU (the driver's count)" if engines else "the GPU's engine count unknown"
    line = (f"NVDEC: {have}; the NVDEC graph runs {threads} decoder threads, one NVDEC session each "
            f"(the larger of DATA.NUM_THREADS and DATA.NVDEC_THREADS)")
    if engines and threads < engines:
        line += f": fewer than the engines, raise DATA.NVDEC_THREADS to {engines} or more to use them all"
    return line


def choose_route(codec: str, width: int, height: int, pix_fmt: str, policy: RoutingPolicy) -> tuple[str, str]:
    """``(route, reason)`` for one video; the reason says why it is not on NVDEC (empty when it is)."""
    codec = codec.lower()
    if policy.gpu_usable:
        refusal = nvdec_refusal(codec, width, height, pix_fmt, compute_capability=policy.compute_capability,
                                codecs=policy.nvdec_codecs, max_bit_depth=policy.nvdec_max_bit_depth,
                                driver_caps=policy.driver_caps)
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


def fallback_route(route: str, codec: str, policy: RoutingPolicy) -> str | None:
    """Where a video goes after failing on ``route`` at run time: from NVDEC to its CPU route (DALI's CPU decoder
    or PyAV, as :func:`choose_route` would pick without a GPU), from DALI's CPU decoder to PyAV (unless
    DATA.CPU_DECODER is 'dali'); None from PyAV or when no other route may take it (then it is quarantined)."""
    if route == NVDEC:
        try:
            return choose_route(codec, 0, 0, "", replace(policy, gpu_usable=False))[0]
        except ValueError:  # DATA.CPU_DECODER 'dali' and a codec that decoder lacks
            return None
    if route == DALI_CPU and policy.cpu_decoder != "dali":
        return PYAV
    return None


@dataclass(frozen=True)
class VideoRoute:
    """One video's route and why it is not on NVDEC (empty when it is)."""

    route: str
    reason: str = ""


class VideoRoutes(Mapping):
    """``row -> VideoRoute`` of every routed video of a list, held as one code per row (-1: not routed, a bad
    video) into a short table of the distinct (route, reason) pairs, so that routing a Kinetics-size list costs a
    few bytes per video. A row moves to another route with ``routes[row] = VideoRoute(...)``."""

    def __init__(self, codes: np.ndarray, choices: list[VideoRoute]):
        self.codes = np.array(codes, np.int32)  # index into choices, -1 where not routed
        self.choices = list(choices)
        self._code_of = {c: i for i, c in enumerate(self.choices)}

    def __getitem__(self, row: int) -> VideoRoute:
        if not 0 <= row < len(self.codes) or self.codes[row] < 0:
            raise KeyError(row)
        return self.choices[self.codes[row]]

    def code(self, route: VideoRoute) -> int:
        """The code of ``route`` (added to the table when new)."""
        code = self._code_of.get(route)
        if code is None:
            code = self._code_of[route] = len(self.choices)
            self.choices.append(route)
        return code

    def __setitem__(self, row: int, route: VideoRoute) -> None:
        if not 0 <= row < len(self.codes):
            raise KeyError(row)
        self.codes[row] = self.code(route)

    def move(self, rows: np.ndarray, route: VideoRoute) -> None:
        """Put every row of ``rows`` on ``route`` at once."""
        self.codes[np.asarray(rows, np.int64)] = self.code(route)

    def rows_on(self, route: str) -> np.ndarray:
        """A mask over the rows: those on ``route`` now."""
        codes = [i for i, choice in enumerate(self.choices) if choice.route == route]
        return np.isin(self.codes, codes)

    def __iter__(self) -> Iterator[int]:
        return iter(np.flatnonzero(self.codes >= 0).tolist())

    def __len__(self) -> int:
        return int(np.count_nonzero(self.codes >= 0))

    def values(self) -> list[VideoRoute]:  # type: ignore[override]
        """The routes in row order, as a list (one pass over the codes, not one lookup per row)."""
        return [self.choices[c] for c in self.codes[self.codes >= 0].tolist()]

    def items(self) -> list[tuple[int, VideoRoute]]:  # type: ignore[override]
        rows = np.flatnonzero(self.codes >= 0)
        return [(r, self.choices[c]) for r, c in zip(rows.tolist(), self.codes[rows].tolist())]

    def counts(self, rows: np.ndarray | None = None) -> dict[str, int]:
        """Videos per route, every route present (zeros included) so that summaries line up across runs, counted
        on the codes; ``rows``: a mask over the rows, to count only those (e.g. the videos still good)."""
        codes = self.codes if rows is None else self.codes[np.asarray(rows, bool)]
        per_choice = np.bincount(codes[codes >= 0], minlength=len(self.choices))
        return {route: sum(int(n) for c, n in zip(self.choices, per_choice) if c.route == route) for route in ROUTES}

    def cpu_reasons(self) -> dict[str, int]:
        """Routed videos not on NVDEC per reason, counted on the codes; the reasons in the order of their first
        video, so that equal counts rank as a count over the rows in list order would rank them."""
        codes = self.codes[self.codes >= 0]
        code, first, n = np.unique(codes, return_index=True, return_counts=True)
        reasons: dict[str, int] = {}
        for i in np.argsort(first, kind="stable").tolist():
            choice = self.choices[code[i]]
            if choice.route != NVDEC:
                reasons[choice.reason] = reasons.get(choice.reason, 0) + int(n[i])
        return reasons


def route_videos(facts: Sequence, group_of_row: np.ndarray, policy: RoutingPolicy, list_desc: str,
                 describe_row: Callable[[int], str] | None = None) -> VideoRoutes:
    """The route of every good video of an index, decided once per group of videos with the same decoder facts
    (``DatasetIndex.decoder_groups``): ``facts[g]`` is a VideoInfo of group ``g``, ``group_of_row[row]`` the group
    of each row (-1: not routed). The coded size is what NVDEC's limits are about (the display size when a cached
    record lacks it).

    Raises:
        ValueError: DATA.CPU_DECODER 'dali' and a video of a codec that decoder lacks (naming the list and the
            first such video: ``describe_row(row)``, e.g. its line and path, else its 0-based row).
    """
    group_of_row = np.asarray(group_of_row)
    rows = np.flatnonzero(group_of_row >= 0)
    first = np.full(len(facts), len(group_of_row), np.int64)  # each group's first row, to try the groups in row order
    np.minimum.at(first, group_of_row[rows], rows)
    routes = VideoRoutes(np.full(len(group_of_row), -1, np.int32), [])
    code_of_group = np.zeros(len(facts), np.int32)
    for g in np.argsort(first, kind="stable").tolist():
        info = facts[g]
        width, height = info.coded_width or info.width, info.coded_height or info.height
        try:
            route = VideoRoute(*choose_route(info.codec, width, height, info.pix_fmt, policy))
        except ValueError as e:
            row = int(first[g])
            raise ValueError(f"{list_desc}, {describe_row(row) if describe_row else f'row {row}'}: {e}") from None
        code_of_group[g] = routes.code(route)
    routes.codes[rows] = code_of_group[group_of_row[rows]]
    return routes


def cpu_share_warning(total: int, cpu_reasons: Mapping[str, int], gpu_present: bool, max_share: float) -> str | None:
    """A warning when a GPU machine would decode more than ``max_share`` of a list of ``total`` videos on the CPU,
    with the commonest reasons (``cpu_reasons``: videos off NVDEC per reason, in the order of their first video,
    :meth:`VideoRoutes.cpu_reasons`); None when the share is within bounds or there is no GPU (then the CPU is the
    only choice)."""
    if not gpu_present or not total:
        return None
    on_cpu = sum(cpu_reasons.values())
    share = on_cpu / total
    if share <= max_share:
        return None
    top = "; ".join(f"{n} x {reason}" for reason, n in Counter(cpu_reasons).most_common(3))
    return (f"{on_cpu} of {total} videos ({share:.0%}) will be decoded on the CPU although this machine "
            f"has a GPU (more than DATA.CPU_ROUTE_MAX_SHARE = {max_share:.0%}): {top}")
