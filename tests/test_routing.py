"""The per-video routing rule: NVDEC when it takes the video, else DALI's CPU decoder, else PyAV."""

from __future__ import annotations

import pytest

from dali_pipelines.routing import (DALI_CPU, NVDEC, PYAV, RoutingPolicy, choose_route, cpu_share_warning,
                                    route_counts)

GPU = RoutingPolicy(gpu_usable=True)
CPU = RoutingPolicy(gpu_usable=False)

# (codec, width, height, pix_fmt, policy) -> route
TABLE = [
    ("h264", 340, 256, "yuv420p", GPU, NVDEC),
    ("h264", 340, 256, "yuv420p", CPU, PYAV),
    ("h264", 32, 32, "yuv420p", GPU, PYAV),               # below H.264's 48x16 width
    ("h264", 340, 256, "yuv444p", GPU, PYAV),             # 4:4:4 H.264
    ("h264", 340, 256, "yuv420p10le", GPU, PYAV),         # 10-bit H.264
    ("hevc", 340, 256, "yuv420p", GPU, NVDEC),
    ("hevc", 128, 96, "yuv420p", GPU, PYAV),              # HEVC below 144x144
    ("hevc", 640, 360, "yuv420p10le", GPU, PYAV),         # 10-bit: not by default
    ("vp9", 64, 48, "yuv420p", GPU, DALI_CPU),            # VP9 below 128x128: DALI's CPU decoder takes it
    ("vp9", 320, 240, "yuv420p", GPU, NVDEC),
    ("vp9", 320, 240, "yuv420p", CPU, DALI_CPU),
    ("vp8", 320, 240, "yuv420p", CPU, DALI_CPU),
    ("mjpeg", 320, 240, "yuvj420p", GPU, DALI_CPU),
    ("mpeg4", 320, 240, "yuv420p", GPU, NVDEC),
    ("mpeg4", 320, 240, "yuv420p", CPU, PYAV),
    ("av1", 320, 240, "yuv420p", GPU, PYAV),              # Hopper has no AV1 decoder
    ("av1", 320, 240, "yuv420p", RoutingPolicy(gpu_usable=True, compute_capability=(8, 9)), NVDEC),
]


@pytest.mark.parametrize("codec, w, h, pix_fmt, policy, route", TABLE)
def test_rule_table(codec, w, h, pix_fmt, policy, route):
    got, reason = choose_route(codec, w, h, pix_fmt, policy)
    assert got == route
    assert (reason == "") == (route == NVDEC)


def test_config_keys_change_the_route():
    wide = RoutingPolicy(gpu_usable=True, nvdec_max_bit_depth=10)
    assert choose_route("hevc", 640, 360, "yuv420p10le", wide)[0] == NVDEC
    narrow = RoutingPolicy(gpu_usable=True, nvdec_codecs=frozenset({"h264"}))
    assert choose_route("hevc", 640, 360, "yuv420p", narrow)[0] == PYAV
    assert choose_route("vp9", 640, 360, "yuv420p", narrow)[0] == DALI_CPU
    all_pyav = RoutingPolicy(gpu_usable=False, cpu_decoder="pyav")
    assert choose_route("vp9", 640, 360, "yuv420p", all_pyav)[0] == PYAV
    dali_only = RoutingPolicy(gpu_usable=False, cpu_decoder="dali")
    assert choose_route("vp9", 640, 360, "yuv420p", dali_only)[0] == DALI_CPU
    with pytest.raises(ValueError, match="cannot decode h264"):
        choose_route("h264", 640, 360, "yuv420p", dali_only)
    with pytest.raises(ValueError, match="CPU_DECODER"):
        RoutingPolicy(gpu_usable=False, cpu_decoder="gpu")


def test_counts_and_cpu_share_warning():
    routes = [NVDEC] * 6 + [PYAV] * 3 + [DALI_CPU]
    reasons = [""] * 6 + ["32x32 is below NVDEC's h264 minimum of 48x16"] * 3 + ["NVDEC does not decode mjpeg"]
    assert route_counts(routes) == {NVDEC: 6, DALI_CPU: 1, PYAV: 3}
    assert route_counts([]) == {NVDEC: 0, DALI_CPU: 0, PYAV: 0}
    warning = cpu_share_warning(routes, reasons, gpu_present=True, max_share=0.25)
    assert "4 of 10 videos (40%)" in warning and "3 x 32x32 is below" in warning
    assert cpu_share_warning(routes, reasons, gpu_present=True, max_share=0.5) is None
    assert cpu_share_warning(routes, reasons, gpu_present=False, max_share=0.0) is None
